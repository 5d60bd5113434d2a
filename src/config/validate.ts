/**
 * Config and state validation. Two layers:
 * - `checkConfigShape` (in `shape.ts`): the TypeBox schema, with its raw errors turned into
 *   one clear `{path, message}` per problem (paths like `routes[0].split.v3`).
 * - `validateState`: the semantic checks a schema cannot express (references between
 *   upstreams and routes, duplicates, URLs, regexes). It is the ONE semantic check: the config
 *   loader, every admin write and every state read from the store pass it, so a state that
 *   passed it is safe to compile. It reads `tls.ca` files only when asked to (the config
 *   loader): for the others it runs on the event loop, and the control plane reads them apart.
 */
import { isIP } from 'node:net'
import type { Problem } from '../errors.js'
import { DEFAULTS, healthTimeoutMs, TARGET_ID_PATTERN } from './schema.js'
import type { DnsDiscovery, FlagSpec, RouteSpec, State, Target, Upstream, UpstreamSpec } from './schema.js'
import { routePosition, type Touched } from '../state/delta.js'
import { formatPath, type PathSegment } from './shape.js'
import { isObj } from './malformed.js'
import { discoveryProblems } from './validate-discovery.js'
import { regexProblem } from './regex.js'

/** What `validateState` and `normalizeState` read: the config file's state part or a State. */
export interface StateSpec {
  upstreams: Record<string, UpstreamSpec>
  routes: RouteSpec[]
  flags?: Record<string, FlagSpec> | undefined
}

/**
 * Default target id: `host:port` of its url, the port defaulting to 80.
 * Throws a TypeError when `url` does not parse; call it on validated urls.
 */
export function defaultTargetId(url: string): string {
  const u = new URL(url)
  return `${u.hostname}:${u.port || (u.protocol === 'https:' ? '443' : '80')}`
}

const TARGET_ID = new RegExp(TARGET_ID_PATTERN)

/** Why a target url is unusable, or undefined when it is fine. */
function targetUrlProblem(url: string): string | undefined {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return `invalid URL ${JSON.stringify(url)}: must be an absolute http:// or https:// URL such as http://127.0.0.1:3001`
  }
  // WHATWG URL accepts "http:host" too; ask for the plain form so configs stay unambiguous.
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !/^https?:\/\//i.test(url)) {
    return 'must be an absolute http:// or https:// URL such as http://127.0.0.1:3001'
  }
  if (u.hostname === '') return 'must have a host'
  if (u.username !== '' || u.password !== '') return 'must not contain credentials'
  if (u.pathname !== '/') return `must not have a path (${JSON.stringify(u.pathname)}): a target is host:port only`
  if (u.search !== '' || u.hash !== '') return 'must not have a query or fragment: a target is host:port only'
  if (u.port === '0') return 'port must be between 1 and 65535'
  return undefined
}

/**
 * The semantic check of a state (or the state part of a config file). Returns every problem
 * with its path; an empty list means the state can be compiled into a routing table.
 *
 * Safe on any input, so the config loader can run it beside the shape check and report both
 * kinds of problem in one pass: a value of the wrong type (or the loader's MALFORMED marker
 * for a value the schema rejected) is skipped, never judged, so the shape problem is not
 * echoed as a semantic one. It does not re-check types or name patterns.
 */
export function validateState(s: StateSpec | unknown, opts: ValidateOptions = {}): Problem[] {
  const problems: Problem[] = []
  const report = (segments: PathSegment[], message: string) => problems.push({ path: formatPath(segments), message })
  if (!isObj(s)) return problems
  // References are only judged against a well-formed upstream map.
  const upstreamsKnown = isObj(s['upstreams'])
  const hasUpstream = (name: string) => !upstreamsKnown || Object.hasOwn(s['upstreams'] as Obj, name)

  for (const [name, upstream] of entriesOf(s['upstreams'])) if (isObj(upstream)) checkUpstream(name, upstream, report, opts)

  const routes = itemsOf(s['routes'])
  const routeNames = new Map<string, number>()
  const matches = new Map<string, number>()
  routes.forEach((route, i) => {
    if (!isObj(route)) return
    const at = ['routes', i]
    const name = route['name']
    if (typeof name === 'string') {
      const sameName = routeNames.get(name)
      if (sameName !== undefined) report([...at, 'name'], `duplicate route ${JSON.stringify(name)}`)
      else routeNames.set(name, i)
    }

    // Routes are chosen by host, then longest prefix, then methods: two equal keys mean the
    // second route can never be chosen.
    const key = matchKey(route['match'])
    const sameMatch = key === undefined ? undefined : matches.get(key)
    if (sameMatch !== undefined) {
      const other = routes[sameMatch] as Obj
      report([...at, 'match'], `same match as routes[${sameMatch}] (${JSON.stringify(other['name'])})`)
    } else if (key !== undefined) matches.set(key, i)

    checkRoute(route, at, hasUpstream, report)
  })

  for (const [name, flag] of entriesOf(s['flags'])) if (isObj(flag)) checkFlag(name, flag, report)
  return problems
}

/**
 * `validateState` for a change: the same checks and messages, run only on what `touched` names
 * (and on what those can clash with), so a write to one route of 10,000 does not re-check the
 * other 9,999. `state` is the state after the change, and the state before it passed
 * `validateState` (or this).
 */
export function validateChange(state: State, touched: Touched, before?: State): Problem[] {
  const problems: Problem[] = []
  const report = (segments: PathSegment[], message: string) => problems.push({ path: formatPath(segments), message })
  const hasUpstream = (name: string) => Object.hasOwn(state.upstreams, name)
  const removed: string[] = []
  for (const name of touched.upstreams) {
    if (hasUpstream(name)) checkUpstream(name, state.upstreams[name] as unknown as Obj, report, {})
    else removed.push(name)
  }

  const routes = state.routes
  if (touched.routes.length > 0 && removed.length === 0) {
    // The touched routes alone, found by position (no pass over 10,000 routes), in route order.
    const at = touched.routes.map((name) => routePosition(routes, name)).filter((i) => i >= 0)
    for (const i of at.sort((x, y) => x - y)) {
      const route = routes[i]!
      if (!standsAsBefore(before, route, i)) checkClashes(routes, i, report)
      checkRoute(route as unknown as Obj, ['routes', i], hasUpstream, report)
    }
  } else if (touched.routes.length > 0 || removed.length > 0) {
    const wanted = new Set(touched.routes)
    for (let i = 0; i < routes.length; i++) {
      const route = routes[i]!
      const at = ['routes', i]
      if (wanted.has(route.name)) {
        checkClashes(routes, i, report)
        checkRoute(route as unknown as Obj, at, hasUpstream, report)
      } else if (removed.length > 0) {
        for (const name of removed) {
          if (Object.hasOwn(route.split, name)) report([...at, 'split', name], `unknown upstream ${JSON.stringify(name)}`)
          ;(route.rules ?? []).forEach((rule, j) => {
            if (rule.upstream === name) report([...at, 'rules', j, 'upstream'], `unknown upstream ${JSON.stringify(name)}`)
          })
          if (route.mirror?.upstream === name) report([...at, 'mirror', 'upstream'], `unknown upstream ${JSON.stringify(name)}`)
        }
      }
    }
  }

  for (const name of touched.flags) if (Object.hasOwn(state.flags, name)) checkFlag(name, state.flags[name] as unknown as Obj, report)
  return problems
}

/**
 * True when `route` has the name and match that route `i` had in `before` (a state that passed
 * validation, which the change left alone but for the touched routes): it can clash with no
 * other route, so a split or rule change is not checked against every route.
 */
function standsAsBefore(before: State | undefined, route: RouteSpec, i: number): boolean {
  const was = before?.routes[i]
  if (was === undefined || was.name !== route.name) return false
  return was.match === route.match || JSON.stringify(was.match) === JSON.stringify(route.match)
}

/** Route `i` against every other route: same name, or same match (reported on the later of the two, as `validateState` does). */
function checkClashes(routes: readonly RouteSpec[], i: number, report: Report): void {
  const route = routes[i]!
  const prefix = route.match?.pathPrefix ?? '/'
  const key = matchKey(route.match)
  for (let j = 0; j < routes.length; j++) {
    if (j === i) continue
    const other = routes[j]!
    if (other.name === route.name) {
      report(['routes', Math.max(i, j), 'name'], `duplicate route ${JSON.stringify(route.name)}`)
    }
    // The prefix first: cheap, and it rules out almost every route.
    if ((other.match?.pathPrefix ?? '/') !== prefix || key === undefined || matchKey(other.match) !== key) continue
    const [first, later] = j < i ? [j, i] : [i, j]
    report(['routes', later, 'match'], `same match as routes[${first}] (${JSON.stringify(routes[first]!.name)})`)
  }
}

type Obj = Record<string, unknown>
type Report = (segments: PathSegment[], message: string) => void

function checkUpstream(name: string, upstream: Obj, report: Report, opts: ValidateOptions): void {
  const ids = new Map<string, number>()
  if (upstream['targets'] === undefined && upstream['discovery'] === undefined) {
    report(['upstreams', name, 'targets'], 'is required (or set discovery to find the targets in DNS)')
  }
  const dns = isObj(upstream['discovery']) ? upstream['discovery']['dns'] : undefined
  if (isObj(dns) && typeof dns['name'] === 'string') {
    for (const p of discoveryProblems(dns as unknown as DnsDiscovery)) report(['upstreams', name, 'discovery', 'dns', ...p.at], p.message)
  }
  itemsOf(upstream['targets']).forEach((target, i) => {
    if (!isObj(target)) return
    const at = ['upstreams', name, 'targets', i]
    const url = target['url']
    const explicit = target['id']
    if (explicit !== undefined && typeof explicit !== 'string') return
    if (typeof url !== 'string') {
      if (explicit === undefined) return
    } else {
      const urlProblem = targetUrlProblem(url)
      if (urlProblem !== undefined) {
        report([...at, 'url'], urlProblem)
        if (explicit === undefined) return // no id to check without a usable url
      }
    }
    const id = explicit ?? defaultTargetId(url as string)
    if (explicit === undefined && !TARGET_ID.test(id)) {
      report([...at, 'id'], `default id ${JSON.stringify(id)} (host:port) is not a valid target id: set an id matching ${TARGET_ID_PATTERN}`)
    }
    const first = ids.get(id)
    if (first !== undefined) report([...at, 'id'], `duplicate id ${JSON.stringify(id)} (same as targets[${first}])`)
    else ids.set(id, i)
  })
  const hc = upstream['healthCheck']
  if (isObj(hc)) {
    const interval = hc['intervalMs'] ?? DEFAULTS.healthCheck.intervalMs
    const timeout = hc['timeoutMs'] ?? (typeof interval === 'number' ? healthTimeoutMs(interval) : undefined)
    // A probe that may outlive the interval would overlap the next one.
    if (typeof interval === 'number' && typeof timeout === 'number' && timeout >= interval) {
      report(['upstreams', name, 'healthCheck', 'timeoutMs'], `must be less than intervalMs (${interval})`)
    }
  }
  const tls = upstream['tls']
  // Discovered targets are plain http: tls there would be a setting that silently does nothing.
  if (isObj(tls) && upstream['discovery'] !== undefined) report(['upstreams', name, 'tls'], 'cannot be used with discovery: discovered targets are http://')
  // The files are read only for the config loader (`readCaFiles`): this check also runs on the
  // event loop for admin writes and store reads, whose files the control plane reads asynchronously.
  const ca = isObj(tls) ? tls['ca'] : undefined
  if (opts.readCaFiles !== undefined) {
    const paths = typeof ca === 'string' ? [ca] : Array.isArray(ca) ? ca.filter((p): p is string => typeof p === 'string') : []
    for (const path of paths) {
      try {
        opts.readCaFiles([path])
      } catch (err) {
        report(['upstreams', name, 'tls', 'ca'], (err as Error).message)
      }
    }
  }
}

export interface ValidateOptions {
  /**
   * Checks `tls.ca` files too: the config loader's `readCaFilesSync` (safe on a FIFO or a device,
   * at most 1 MiB a file). Left out, no file is read (see `Follower.readCaAhead`).
   */
  readCaFiles?: (paths: readonly string[]) => unknown
}

/** One route's own checks (references, weights, rules, sticky); not its clashes with other routes. */
function checkRoute(route: Obj, at: PathSegment[], hasUpstream: (name: string) => boolean, report: Report): void {
  const split = route['split']
  if (isObj(split)) {
    const weights = Object.entries(split)
    for (const [upstream, weight] of weights) {
      if (typeof weight === 'number' && !hasUpstream(upstream)) report([...at, 'split', upstream], `unknown upstream ${JSON.stringify(upstream)}`)
    }
    if (weights.length === 0) report([...at, 'split'], 'must name at least one upstream')
    else if (weights.every(([, w]) => w === 0)) report([...at, 'split'], 'weights must not all be 0')
  }

  itemsOf(route['rules']).forEach((rule, j) => {
    if (!isObj(rule)) return
    const ruleAt = [...at, 'rules', j]
    const upstream = rule['upstream']
    if (typeof upstream === 'string' && !hasUpstream(upstream)) report([...ruleAt, 'upstream'], `unknown upstream ${JSON.stringify(upstream)}`)
    const match = rule['match']
    if (!isObj(match)) return
    for (const kind of ['header', 'cookie', 'query'] as const) {
      const lowered = new Set<string>()
      for (const [key, matcher] of entriesOf(match[kind])) {
        if (typeof matcher !== 'string' && !isObj(matcher)) continue
        // Header names are case-insensitive (RFC 9110 §5.1): X-V and x-v are the same header.
        if (kind === 'header') {
          if (lowered.has(key.toLowerCase())) report([...ruleAt, 'match', kind, key], 'duplicate header (names are case-insensitive)')
          lowered.add(key.toLowerCase())
        }
        const regex = isObj(matcher) ? matcher['regex'] : undefined
        if (typeof regex === 'string') {
          // Matched with RE2 (linear time, see regex.ts): what it cannot run is refused here, with its path.
          const problem = regexProblem(regex)
          if (problem !== undefined) report([...ruleAt, 'match', kind, key, 'regex'], problem)
        }
      }
    }
  })

  const mirror = route['mirror']
  if (isObj(mirror) && typeof mirror['upstream'] === 'string' && !hasUpstream(mirror['upstream'])) {
    report([...at, 'mirror', 'upstream'], `unknown upstream ${JSON.stringify(mirror['upstream'])}`)
  }

  const sticky = route['sticky']
  if (isObj(sticky) && (sticky['by'] === 'header' || sticky['by'] === 'cookie') && sticky['name'] === undefined) {
    report([...at, 'sticky', 'name'], `is required when by is ${JSON.stringify(sticky['by'])}`)
  }
}

function checkFlag(name: string, flag: Obj, report: Report): void {
  const at = ['flags', name, 'by']
  const by = flag['by']
  const percent = flag['percent']
  if (isObj(by)) {
    const keys = flagByKeys(by)
    // Two keys would make the bucketing ambiguous; none cannot bucket at all.
    if (keys.length !== 1) {
      report(at, `must name exactly one of header, cookie, ip (got ${keys.length === 0 ? 'none' : keys.join(', ')})`)
    }
  } else if (by === undefined && typeof percent === 'number' && percent < 100) {
    report(at, 'is required when percent is below 100: name one of header, cookie, ip')
  }
}

/** The entries of an object, none for anything else (a malformed value is skipped). */
function entriesOf(v: unknown): [string, unknown][] {
  return isObj(v) ? Object.entries(v) : []
}

function itemsOf(v: unknown): unknown[] {
  return Array.isArray(v) ? v : []
}

function flagByKeys(by: Obj): string[] {
  const keys: string[] = []
  if (by['header'] !== undefined) keys.push('header')
  if (by['cookie'] !== undefined) keys.push('cookie')
  if (by['ip'] === true) keys.push('ip')
  return keys
}

/** The key two routes clash on; undefined when the match is malformed (nothing to compare). */
function matchKey(match: unknown): string | undefined {
  if (match !== undefined && !isObj(match)) return undefined
  const m = match ?? {}
  const { host = '*', pathPrefix = '/', methods } = m
  if (typeof host !== 'string' || typeof pathPrefix !== 'string') return undefined
  if (methods !== undefined && !(Array.isArray(methods) && methods.every((x) => typeof x === 'string'))) return undefined
  const methodKey = methods === undefined ? '*' : [...new Set(methods as string[])].sort().join(',')
  return JSON.stringify([host.toLowerCase(), pathPrefix, methodKey])
}

/**
 * The state part of a validated spec with defaults filled in: each target gets its `id`
 * (host:port) and `state` ('active'); rule header names are lowercased, so the data plane
 * compares them with Node's lowercased `req.headers`. Pure: returns new objects.
 */
export function normalizeState(spec: StateSpec): Omit<State, 'revision' | 'rollouts'> {
  const upstreams = Object.fromEntries(
    Object.entries(spec.upstreams).map(([name, upstream]): [string, Upstream] => {
      const copy = structuredClone(upstream)
      const targets = (copy.targets ?? []).map(
        (t): Target => ({ id: t.id ?? defaultTargetId(t.url), url: t.url, state: t.state ?? 'active' }),
      )
      return [name, { ...copy, targets }]
    }),
  )
  const routes = spec.routes.map((route) => {
    const copy = structuredClone(route)
    for (const rule of copy.rules ?? []) {
      const header = rule.match.header
      if (header !== undefined) {
        rule.match.header = Object.fromEntries(Object.entries(header).map(([k, v]) => [k.toLowerCase(), v]))
      }
    }
    return copy
  })
  return { upstreams, routes, flags: structuredClone(spec.flags ?? {}) }
}

/**
 * Why `value` is not a usable `listen.trustedProxies` entry (an IPv4 or IPv6 address, alone or
 * with a prefix length: `10.0.0.0/8`, `192.168.1.7`, `fd00::/8`, `::ffff:10.0.0.0/104`), or
 * undefined when it is one. Host bits under the prefix are allowed (`10.1.2.3/8` is `10.0.0.0/8`).
 */
export function cidrProblem(value: string): string | undefined {
  const slash = value.indexOf('/')
  const addr = slash < 0 ? value : value.slice(0, slash)
  const family = isIP(addr)
  // A zone (`fe80::1%eth0`) names an interface of this host, not a peer address.
  if (family === 0 || addr.includes('%')) {
    return `${JSON.stringify(value)} is not an IP address or CIDR block (such as 10.0.0.0/8, 192.168.1.7, fd00::/8)`
  }
  if (slash < 0) return undefined
  const bits = value.slice(slash + 1)
  const max = family === 4 ? 32 : 128
  if (!/^[0-9]{1,3}$/.test(bits) || Number(bits) > max) {
    return `${JSON.stringify(value)}: the prefix length after / must be a number from 0 to ${max} for an IPv${family} address`
  }
  return undefined
}

/** `listen.trustedProxies`: every entry a usable address or CIDR block, each problem at its path. Safe on malformed input. */
export function validateTrustedProxies(config: unknown): Problem[] {
  const listen = isObj(config) ? config['listen'] : undefined
  const problems: Problem[] = []
  itemsOf(isObj(listen) ? listen['trustedProxies'] : undefined).forEach((entry, i) => {
    if (typeof entry !== 'string') return
    const message = cidrProblem(entry)
    if (message !== undefined) problems.push({ path: formatPath(['listen', 'trustedProxies', i]), message })
  })
  return problems
}
