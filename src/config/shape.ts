/**
 * Config shape check: the TypeBox schema, with its raw errors turned into one clear
 * `{path, message}` per problem (paths like `routes[0].split.v3`). The admin API turns the
 * errors of its request schemas into problems with the same translator (`schemaProblems`).
 * The semantic checks a schema cannot express live in `validate.ts`.
 */
import { Compile } from 'typebox/compile'
import { Settings } from 'typebox/system'
import type { Problem } from '../errors.js'
import { ConfigFile, NAME_PATTERN, TARGET_ID_PATTERN } from './schema.js'
import { formatPath, type PathSegment } from '../state/path.js'

export { formatPath, type PathSegment } from '../state/path.js'

/** Compiled once, at import. */
const configFileChecker = Compile(ConfigFile)


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


/** A TypeBox error as `Errors()` returns it, and as fastify hands it over in `err.validation`. */
export interface RawSchemaError {
  keyword: string
  schemaPath: string
  instancePath: string
  params: object
  message?: string
}

/** The fields of a TypeBox error we use; `custom` marks a message we already wrote. */
interface SchemaError {
  keyword: string
  schemaPath: string
  instancePath: string
  params: Record<string, unknown>
  message: string
}

export interface SchemaProblemOptions {
  /** Put before every path: `['body']` gives `body.targets[0].url`. */
  prefix?: readonly PathSegment[]
  /**
   * The schema the errors' `schemaPath`s point into. A record's invalid key is told from an
   * unknown property by the patterns found there; without it, it reads as an unknown property.
   */
  schema?: unknown
  /** Messages for patterns, tried before the built-in ones (the admin API words names its own way). */
  hints?: Readonly<Record<string, string>>
  /** Report an unknown key at its own path (`body.extra`) rather than at its object's (`''`). */
  keyPaths?: boolean
}

/**
 * TypeBox errors of `raw` → one problem per fault, deduplicated, without TypeBox's noise
 * (`schema is false`, per-branch union errors).
 */
export function schemaProblems(errors: readonly RawSchemaError[], raw: unknown, options: SchemaProblemOptions = {}): Problem[] {
  const list: SchemaError[] = errors.map((e) => ({
    keyword: e.keyword,
    schemaPath: e.schemaPath,
    instancePath: e.instancePath,
    params: e.params as Record<string, unknown>,
    message: e.message ?? 'is invalid',
  }))
  const seen = new Set<string>()
  const problems: Problem[] = []
  for (const e of resolveUnions(list)) {
    for (const p of describe(e, raw, options)) {
      const key = `${p.path}\0${p.message}`
      if (seen.has(key)) continue
      seen.add(key)
      problems.push(p)
    }
  }
  return problems
}

/**
 * Checks `raw` against the ConfigFile schema: one problem per fault (see `schemaProblems`).
 * `errors`: its raw errors when the caller already has them (`schemaErrors(raw)`).
 */
export function checkConfigShape(raw: unknown, errors?: ReturnType<typeof schemaErrors>): Problem[] {
  const found = errors ?? (configFileChecker.Check(raw) ? [] : schemaErrors(raw))
  return found.length === 0 ? [] : schemaProblems(found, raw, { schema: ConfigFile })
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

function describe(e: SchemaError, raw: unknown, options: SchemaProblemOptions): Problem[] {
  const { prefix = [], hints = {} } = options
  const segments = pointerToSegments(e.instancePath, raw)
  const pathOf = (...more: PathSegment[]) => formatPath([...prefix, ...segments, ...more])
  const here = (message: string): Problem[] => [{ path: pathOf(), message }]
  const p = e.params
  switch (e.keyword) {
    case 'custom':
      return here(e.message)
    case 'boolean':
      // `schema is false` always comes with the `additionalProperties` error of its parent.
      return []
    case 'additionalProperties': {
      const keys = Array.isArray(p['additionalProperties']) ? (p['additionalProperties'] as unknown[]) : []
      const schema = schemaAt(options.schema, e.schemaPath)
      const patterns = isRecord(schema) && isRecord(schema['patternProperties']) ? Object.keys(schema['patternProperties']) : []
      const pattern = patterns[0]
      return keys.map((key) => ({
        path: options.keyPaths === true ? pathOf(String(key)) : pathOf(),
        // A record (upstreams, split, flags...) rejects a key because it is not a valid name.
        message:
          pattern === undefined
            ? `unknown property ${JSON.stringify(key)}`
            : patternMessage(key, pattern, hints, nounFor(e.schemaPath)),
      }))
    }
    case 'required': {
      const missing = Array.isArray(p['requiredProperties']) ? (p['requiredProperties'] as unknown[]) : []
      return missing.map((name) => ({ path: pathOf(String(name)), message: 'is required' }))
    }
    case 'type':
      return here(`must be ${typeNames(p['type']).map(withArticle).join(' or ')}`)
    case 'pattern':
      return here(patternMessage(valueAt(segments, raw), String(p['pattern']), hints))
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
function patternMessage(value: unknown, pattern: string, hints: Readonly<Record<string, string>>, noun?: string): string {
  const hint = Object.hasOwn(hints, pattern) ? hints[pattern] : PATTERN_HINTS[pattern]
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

/** The sub-schema of `root` a TypeBox `schemaPath` (`#/properties/routes/items/...`) points at. */
function schemaAt(root: unknown, schemaPath: string): unknown {
  let node: unknown = root
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
