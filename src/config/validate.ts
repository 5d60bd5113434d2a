/**
 * Config and state validation. Two layers:
 * - `checkConfigShape`: the TypeBox schema, with its raw errors turned into one clear
 *   `{path, message}` per problem (paths like `routes[0].split.v3`).
 * - `validateState`: the semantic checks a schema cannot express (references between
 *   upstreams and routes, duplicates, URLs, regexes). It is the ONE semantic check: the config
 *   loader and every admin write call it, so a state that passed it is safe to compile.
 */
import { Compile } from 'typebox/compile'
import { Settings } from 'typebox/system'
import type { Problem } from '../errors.js'
import { ConfigFile, DEFAULTS, NAME_PATTERN, TARGET_ID_PATTERN } from './schema.js'
import type { FlagSpec, RouteSpec, State, Target, Upstream, UpstreamSpec } from './schema.js'

/** Compiled once, at import. */
const configFileChecker = Compile(ConfigFile)

export type PathSegment = string | number

/**
 * TypeBox stops collecting after `maxErrors` (a global, default 8, a DoS guard for untrusted
 * input). `validate` must print every problem, so raise it for this one synchronous call and
 * restore it, leaving other users of TypeBox (the admin API) unaffected.
 */
const MAX_SCHEMA_ERRORS = 1000

/** Raw TypeBox errors of `raw` against ConfigFile, all of them; the loader uses them to coerce `${PORT}`. */
export function schemaErrors(raw: unknown): ReturnType<typeof configFileChecker.Errors> {
  const previous = Settings.Get().maxErrors
  Settings.Set({ maxErrors: MAX_SCHEMA_ERRORS })
  try {
    return configFileChecker.Errors(raw)
  } finally {
    Settings.Set({ maxErrors: previous })
  }
}

/**
 * `['routes', 0, 'split', 'v3']` → `routes[0].split.v3`. Keys that would be ambiguous in
 * dotted form (dots, spaces, ...) are bracketed and quoted: `upstreams["v1.2"]`.
 */
export function formatPath(segments: readonly PathSegment[]): string {
  let out = ''
  for (const s of segments) {
    if (typeof s === 'number') out += `[${s}]`
    else if (/^[A-Za-z0-9_-]+$/.test(s)) out += out === '' ? s : `.${s}`
    else out += `[${JSON.stringify(s)}]`
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Shape: TypeBox errors → problems

/** The fields of a TypeBox error we use; `custom` marks a message we already wrote. */
interface SchemaError {
  keyword: string
  schemaPath: string
  instancePath: string
  params: Record<string, unknown>
  message: string
}

/**
 * Checks `raw` against the ConfigFile schema. Returns one problem per fault, deduplicated,
 * without TypeBox's noise (`schema is false`, per-branch union errors).
 */
export function checkConfigShape(raw: unknown): Problem[] {
  if (configFileChecker.Check(raw)) return []
  const errors: SchemaError[] = schemaErrors(raw).map((e) => ({
    keyword: e.keyword,
    schemaPath: e.schemaPath,
    instancePath: e.instancePath,
    params: e.params as Record<string, unknown>,
    message: e.message,
  }))
  const seen = new Set<string>()
  const problems: Problem[] = []
  for (const e of resolveUnions(errors)) {
    for (const p of describe(e, raw)) {
      const key = `${p.path}\0${p.message}`
      if (seen.has(key)) continue
      seen.add(key)
      problems.push(p)
    }
  }
  return problems
}

/**
 * Replaces each failed `anyOf` and its per-branch errors by what the user meant: the errors
 * of the one branch whose kind matches the value (e.g. the `redis` store), or one message
 * listing the alternatives (`must be one of "active", "draining", "disabled"`). Outer unions
 * first; errors of a chosen branch may hold a nested union, handled on the next turn.
 */
function resolveUnions(errors: SchemaError[]): SchemaError[] {
  let list = errors
  for (;;) {
    const union = list
      .filter((e) => e.keyword === 'anyOf')
      .sort((a, b) => a.schemaPath.length - b.schemaPath.length)[0]
    if (union === undefined) return list
    const prefix = union.schemaPath + '/anyOf/'
    const branches = new Map<string, SchemaError[]>()
    for (const e of list) {
      if (!e.schemaPath.startsWith(prefix)) continue
      const index = e.schemaPath.slice(prefix.length).split('/')[0] ?? ''
      branches.set(index, [...(branches.get(index) ?? []), e])
    }
    const next: SchemaError[] = []
    for (const e of list) {
      if (e === union) next.push(...pickBranch(union, [...branches.values()]))
      else if (!e.schemaPath.startsWith(prefix)) next.push(e)
    }
    list = next
  }
}

function pickBranch(union: SchemaError, branches: SchemaError[][]): SchemaError[] {
  const at = union.instancePath
  // A branch "is of the wrong kind" when the value has the wrong JSON type for it, or a
  // literal (the value itself, or a discriminator such as `type`) does not match.
  const wrongKind = (e: SchemaError) =>
    (e.keyword === 'type' && e.instancePath === at) ||
    (e.keyword === 'const' && (e.instancePath === at || isDirectChild(e.instancePath, at)))
  const fitting = branches.filter((errs) => !errs.some(wrongKind))
  if (fitting.length > 0) return fitting.reduce((a, b) => (b.length < a.length ? b : a))

  const custom = (instancePath: string, message: string): SchemaError[] => [
    { keyword: 'custom', schemaPath: union.schemaPath, instancePath, params: {}, message },
  ]
  const consts = branches.map((errs) => errs.find((e) => e.keyword === 'const'))
  const first = consts[0]
  if (first !== undefined && consts.every((c) => c !== undefined && c.instancePath === first.instancePath)) {
    const values = consts.map((c) => JSON.stringify(c?.params['allowedValue']))
    return custom(first.instancePath, `must be one of ${[...new Set(values)].join(', ')}`)
  }
  const types = branches.map((errs) => errs.find((e) => e.keyword === 'type' && e.instancePath === at))
  if (types.every((t) => t !== undefined)) {
    const names = new Set(types.flatMap((t) => typeNames(t?.params['type'])))
    return custom(at, `must be ${[...names].map(withArticle).join(' or ')}`)
  }
  return custom(at, 'does not match any allowed form')
}

function isDirectChild(path: string, parent: string): boolean {
  return path.startsWith(parent + '/') && !path.slice(parent.length + 1).includes('/')
}

/** Patterns whose raw regex would puzzle a reader. */
const PATTERN_HINTS: Record<string, string> = {
  '^/': 'must start with "/"',
  '^rediss?://': 'must start with redis:// or rediss://',
  '^[A-Z]{1,16}$': 'must be an HTTP method in upper case, e.g. "GET"',
  '^(\\*|[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?)$': 'must be "*" or a host name, optionally with :port',
}

function describe(e: SchemaError, raw: unknown): Problem[] {
  const segments = pointerToSegments(e.instancePath, raw)
  const here = (message: string): Problem[] => [{ path: formatPath(segments), message }]
  const p = e.params
  switch (e.keyword) {
    case 'custom':
      return here(e.message)
    case 'boolean':
      // `schema is false` always comes with the `additionalProperties` error of its parent.
      return []
    case 'additionalProperties': {
      const keys = Array.isArray(p['additionalProperties']) ? (p['additionalProperties'] as unknown[]) : []
      const schema = schemaAt(e.schemaPath)
      const patterns = isRecord(schema) && isRecord(schema['patternProperties']) ? Object.keys(schema['patternProperties']) : []
      const pattern = patterns[0]
      return keys.map((key) => ({
        path: formatPath(segments),
        // A record (upstreams, split, flags...) rejects a key because it is not a valid name.
        message:
          pattern === undefined
            ? `unknown property ${JSON.stringify(key)}`
            : patternMessage(key, pattern, nounFor(e.schemaPath)),
      }))
    }
    case 'required': {
      const missing = Array.isArray(p['requiredProperties']) ? (p['requiredProperties'] as unknown[]) : []
      return missing.map((name) => ({ path: formatPath([...segments, String(name)]), message: 'is required' }))
    }
    case 'type':
      return here(`must be ${typeNames(p['type']).map(withArticle).join(' or ')}`)
    case 'pattern':
      return here(patternMessage(valueAt(segments, raw), String(p['pattern'])))
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return here(`must be ${String(p['comparison'])} ${String(p['limit'])}`)
    case 'minLength':
      return here(p['limit'] === 1 ? 'must not be empty' : `must be at least ${String(p['limit'])} characters long`)
    case 'maxLength':
      return here(`must be at most ${String(p['limit'])} characters long`)
    case 'minItems':
      return here(p['limit'] === 1 ? 'must not be empty' : `must have at least ${String(p['limit'])} items`)
    case 'maxItems':
      return here(`must have at most ${String(p['limit'])} items`)
    case 'minProperties':
      return here(p['limit'] === 1 ? 'must not be empty' : `must have at least ${String(p['limit'])} entries`)
    case 'maxProperties':
      return here(`must have at most ${String(p['limit'])} entries`)
    case 'const':
      return here(`must be ${JSON.stringify(p['allowedValue'])}`)
    default:
      return here(e.message)
  }
}

/** `upstreams`, `split`... hold names; `header`/`cookie`/`query` maps hold header (cookie, query) names. */
function nounFor(schemaPath: string): string {
  const last = schemaPath.split('/').pop()
  return last === 'header' || last === 'cookie' || last === 'query' ? `${last} name` : 'name'
}

/** `noun` names what a record key is; values get one only for the name and target id patterns. */
function patternMessage(value: unknown, pattern: string, noun?: string): string {
  const hint = PATTERN_HINTS[pattern]
  if (hint !== undefined) return hint
  const what = pattern === TARGET_ID_PATTERN ? 'target id' : pattern === NAME_PATTERN ? 'name' : noun
  if (what === undefined) return `must match ${pattern}`
  const max = pattern === NAME_PATTERN ? 64 : pattern === TARGET_ID_PATTERN ? 128 : undefined
  if (max !== undefined && typeof value === 'string' && value.length > max) {
    return `invalid ${what}: longer than ${max} characters`
  }
  return `invalid ${what} ${JSON.stringify(value)}: must match ${pattern}`
}

function typeNames(type: unknown): string[] {
  return Array.isArray(type) ? type.map(String) : [String(type)]
}

function withArticle(type: string): string {
  if (type === 'null') return 'null'
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`
}

/** JSON pointer → segments; array indices become numbers (looked up in the value itself). */
function pointerToSegments(pointer: string, root: unknown): PathSegment[] {
  if (pointer === '') return []
  const segments: PathSegment[] = []
  let node = root
  for (const token of pointer.slice(1).split('/')) {
    const key = token.replace(/~1/g, '/').replace(/~0/g, '~')
    if (Array.isArray(node)) {
      segments.push(Number(key))
      node = node[Number(key)]
    } else {
      segments.push(key)
      node = isRecord(node) ? node[key] : undefined
    }
  }
  return segments
}

function valueAt(segments: readonly PathSegment[], root: unknown): unknown {
  let node = root
  for (const s of segments) node = isRecord(node) || Array.isArray(node) ? (node as Record<PathSegment, unknown>)[s] : undefined
  return node
}

/** The sub-schema a TypeBox `schemaPath` (`#/properties/routes/items/...`) points at. */
function schemaAt(schemaPath: string): unknown {
  let node: unknown = ConfigFile
  for (const token of schemaPath.replace(/^#\/?/, '').split('/')) {
    if (token === '') continue
    const key = token.replace(/~1/g, '/').replace(/~0/g, '~')
    node = isRecord(node) || Array.isArray(node) ? (node as Record<string, unknown>)[key] : undefined
  }
  return node
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

// ---------------------------------------------------------------------------------------------
// Semantics

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
    upstream.targets.forEach((target, i) => {
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
      const targets = copy.targets.map(
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
