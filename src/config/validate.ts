/**
 * Config and state validation. Two layers:
 * - `checkConfigShape` (in `shape.ts`): the TypeBox schema, with its raw errors turned into
 *   one clear `{path, message}` per problem (paths like `routes[0].split.v3`).
 * - `validateState`: the semantic checks a schema cannot express (references between
 *   upstreams and routes, duplicates, URLs, regexes). It is the ONE semantic check: the config
 *   loader and every admin write call it, so a state that passed it is safe to compile.
 */
import type { Problem } from '../errors.js'
import { DEFAULTS, TARGET_ID_PATTERN } from './schema.js'
import type { FlagSpec, RouteSpec, State, Target, Upstream, UpstreamSpec } from './schema.js'
import { formatPath, type PathSegment } from './shape.js'
import { discoveryProblems } from './validate-discovery.js'

/** What `validateState` and `normalizeState` read: the config file's state part or a State. */
export interface StateSpec {
  upstreams: Record<string, UpstreamSpec>
  routes: RouteSpec[]
  flags?: Record<string, FlagSpec> | undefined
}

/**
 * Default target id: `host:port` of its url, the port defaulting to 80 (SPEC §1).
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
    return `invalid URL ${JSON.stringify(url)}: must be an absolute http:// URL such as http://127.0.0.1:3001`
  }
  if (u.protocol === 'https:') return 'https:// targets are not supported yet: use http://'
  // WHATWG URL accepts "http:host" too; ask for the plain form so configs stay unambiguous.
  if (u.protocol !== 'http:' || !/^http:\/\//i.test(url)) return 'must be an absolute http:// URL such as http://127.0.0.1:3001'
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
 * Assumes the value already passed the schema (types and name patterns are not re-checked).
 */
export function validateState(s: StateSpec): Problem[] {
  const problems: Problem[] = []
  const report = (segments: PathSegment[], message: string) => problems.push({ path: formatPath(segments), message })
  const hasUpstream = (name: string) => Object.hasOwn(s.upstreams, name)

  for (const [name, upstream] of Object.entries(s.upstreams)) {
    const ids = new Map<string, number>()
    if (upstream.targets === undefined && upstream.discovery === undefined) {
      report(['upstreams', name, 'targets'], 'is required (or set discovery to find the targets in DNS)')
    }
    if (upstream.discovery !== undefined) {
      for (const p of discoveryProblems(upstream.discovery.dns)) report(['upstreams', name, 'discovery', 'dns', ...p.at], p.message)
    }
    const targets = upstream.targets ?? []
    targets.forEach((target, i) => {
      const at = ['upstreams', name, 'targets', i]
      const urlProblem = targetUrlProblem(target.url)
      if (urlProblem !== undefined) {
        report([...at, 'url'], urlProblem)
        if (target.id === undefined) return // no id to check without a usable url
      }
      const id = target.id ?? defaultTargetId(target.url)
      if (target.id === undefined && !TARGET_ID.test(id)) {
        report([...at, 'id'], `default id ${JSON.stringify(id)} (host:port) is not a valid target id: set an id matching ${TARGET_ID_PATTERN}`)
      }
      const first = ids.get(id)
      if (first !== undefined) report([...at, 'id'], `duplicate id ${JSON.stringify(id)} (same as targets[${first}])`)
      else ids.set(id, i)
    })
    const hc = upstream.healthCheck
    if (hc !== undefined) {
      const interval = hc.intervalMs ?? DEFAULTS.healthCheck.intervalMs
      const timeout = hc.timeoutMs ?? DEFAULTS.healthCheck.timeoutMs
      // A probe that may outlive the interval would overlap the next one.
      if (timeout >= interval) report(['upstreams', name, 'healthCheck', 'timeoutMs'], `must be less than intervalMs (${interval})`)
    }
  }

  const routeNames = new Map<string, number>()
  const matches = new Map<string, number>()
  s.routes.forEach((route, i) => {
    const at = ['routes', i]
    const sameName = routeNames.get(route.name)
    if (sameName !== undefined) report([...at, 'name'], `duplicate route ${JSON.stringify(route.name)}`)
    else routeNames.set(route.name, i)

    // Routes are chosen by host, then longest prefix, then methods: two equal keys mean the
    // second route can never be chosen.
    const key = matchKey(route)
    const sameMatch = matches.get(key)
    if (sameMatch !== undefined) {
      report([...at, 'match'], `same match as routes[${sameMatch}] (${JSON.stringify(s.routes[sameMatch]?.name)})`)
    } else matches.set(key, i)

    const weights = Object.entries(route.split)
    for (const [upstream] of weights) {
      if (!hasUpstream(upstream)) report([...at, 'split', upstream], `unknown upstream ${JSON.stringify(upstream)}`)
    }
    if (weights.length === 0) report([...at, 'split'], 'must name at least one upstream')
    else if (weights.every(([, w]) => w === 0)) report([...at, 'split'], 'weights must not all be 0')

    route.rules?.forEach((rule, j) => {
      const ruleAt = [...at, 'rules', j]
      if (!hasUpstream(rule.upstream)) report([...ruleAt, 'upstream'], `unknown upstream ${JSON.stringify(rule.upstream)}`)
      for (const kind of ['header', 'cookie', 'query'] as const) {
        const lowered = new Set<string>()
        for (const [key, matcher] of Object.entries(rule.match[kind] ?? {})) {
          // Header names are case-insensitive (RFC 9110 §5.1): X-V and x-v are the same header.
          if (kind === 'header') {
            if (lowered.has(key.toLowerCase())) report([...ruleAt, 'match', kind, key], 'duplicate header (names are case-insensitive)')
            lowered.add(key.toLowerCase())
          }
          if (typeof matcher === 'object') {
            try {
              new RegExp(matcher.regex)
            } catch (err) {
              const why = (err as Error).message.replace(/^Invalid regular expression: /, '')
              report([...ruleAt, 'match', kind, key, 'regex'], `invalid regular expression: ${why}`)
            }
          }
        }
      }
    })

    const sticky = route.sticky
    if (sticky !== undefined && sticky.by !== 'ip' && sticky.name === undefined) {
      report([...at, 'sticky', 'name'], `is required when by is ${JSON.stringify(sticky.by)}`)
    }
  })

  for (const [name, flag] of Object.entries(s.flags ?? {})) {
    const at = ['flags', name, 'by']
    if (flag.by !== undefined) {
      const keys = flagByKeys(flag.by)
      // Two keys would make the bucketing ambiguous; none cannot bucket at all.
      if (keys.length !== 1) {
        report(at, `must name exactly one of header, cookie, ip (got ${keys.length === 0 ? 'none' : keys.join(', ')})`)
      }
    } else if (flag.percent !== undefined && flag.percent < 100) {
      report(at, 'is required when percent is below 100: name one of header, cookie, ip')
    }
  }
  return problems
}

function flagByKeys(by: NonNullable<FlagSpec['by']>): string[] {
  const keys: string[] = []
  if (by.header !== undefined) keys.push('header')
  if (by.cookie !== undefined) keys.push('cookie')
  if (by.ip === true) keys.push('ip')
  return keys
}

function matchKey(route: RouteSpec): string {
  const m = route.match ?? {}
  const methods = m.methods === undefined ? '*' : [...new Set(m.methods)].sort().join(',')
  return JSON.stringify([(m.host ?? '*').toLowerCase(), m.pathPrefix ?? '/', methods])
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
