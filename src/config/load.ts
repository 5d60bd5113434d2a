/**
 * Reads a config file (YAML or JSON: YAML 1.2 is a superset of JSON, so one parser serves
 * both), substitutes `${ENV_VAR}`, and checks it in one pass: shape, semantics and the
 * cross-field rules of the static part (admin exposure, port clash), every problem once.
 */
import { readFile } from 'node:fs/promises'
import { BlockList, isIP } from 'node:net'
import { LineCounter, parseDocument } from 'yaml'
import type { Problem } from '../errors.js'
import { DEFAULTS } from './schema.js'
import type { ConfigFile } from './schema.js'
import { isObj, markMalformed } from './malformed.js'
import { checkConfigShape, formatPath, schemaErrors } from './shape.js'
import type { PathSegment } from './shape.js'
import { readCaFilesSync, readListenerTls } from './tls-files.js'
import { validateState, validateTrustedProxies } from './validate.js'

export interface LoadResult {
  /** The parsed, substituted config; only trustworthy when `problems` is empty. */
  config: ConfigFile
  problems: Problem[]
}

/**
 * Loads and checks a config file. Never throws for a bad or unreadable file: every fault is
 * a problem (an unreadable file is `{path: '', message: 'FILE: cannot read: ENOENT...'}`).
 */
export async function loadConfigFile(path: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadResult> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    return { config: emptyConfig(), problems: [{ path: '', message: `${path}: cannot read: ${(err as Error).message}` }] }
  }
  return parseConfigText(text, env)
}

/** `loadConfigFile` without the file: parse, substitute, check. */
export function parseConfigText(text: string, env: NodeJS.ProcessEnv = process.env): LoadResult {
  const parsed = parseText(text)
  if ('problem' in parsed) return { config: emptyConfig(), problems: [parsed.problem] }

  const subst = substituteEnv(parsed.value, env)
  coerceNumbers(subst)
  const config = subst.value as ConfigFile

  // A value whose variable is unset still holds `${VAR}`: shape errors at it would only repeat
  // the env problem, so they are left out.
  const envPaths = subst.problems.map((p) => p.path)
  const unrelated = (p: Problem) => !envPaths.some((e) => p.path === e || p.path.startsWith(e + '.') || p.path.startsWith(e + '['))
  const errors = schemaErrors(config)
  const shape = checkConfigShape(config, errors).filter(unrelated)
  // Semantics run too, on a copy where what the shape check (or an unset variable) already
  // condemned is hidden, so one run reports every problem and none twice.
  const judged = errors.length === 0 && subst.unresolved.length === 0 ? config : markMalformed(config, errors, subst.unresolved)
  const reported = new Set([...envPaths, ...shape.map((p) => p.path)])
  // The file's CA paths are the operator's and read here, synchronously but safely (tls-files.ts).
  const semantic = [...validateState(judged, { readCaFiles: readCaFilesSync }), ...validateTrustedProxies(judged), ...crossCheck(judged)].filter((p) => !reported.has(p.path))
  return { config, problems: [...subst.problems, ...shape, ...semantic] }
}

/** The keys of a config file that make up the state (the rest is static: listen, admin, store...). */
export const STATE_KEYS = ['upstreams', 'routes', 'flags'] as const

/**
 * Checks a declared state (`{upstreams, routes, flags?}`, no `${VAR}` left to substitute) as
 * the loader checks a config file's state part: shape and meaning in one pass, every problem
 * once, with the paths a file has (`routes[0].split.v3`). A key outside the state is a problem:
 * a declared state has no static part.
 */
export function checkDeclaredState(value: unknown): Problem[] {
  if (!isObj(value)) return [{ path: '', message: 'must be an object {upstreams, routes, flags}' }]
  const extra: Problem[] = Object.keys(value)
    .filter((k) => !(STATE_KEYS as readonly string[]).includes(k))
    .map((k) => ({ path: k, message: STRAY_KEYS[k] ?? `not part of a state (only ${STATE_KEYS.join(', ')})` }))
  const state = Object.fromEntries(STATE_KEYS.filter((k) => Object.hasOwn(value, k)).map((k) => [k, value[k]]))
  const errors = schemaErrors(state)
  const shape = checkConfigShape(state, errors)
  const judged = errors.length === 0 ? state : markMalformed(state, errors, [])
  const reported = new Set(shape.map((p) => p.path))
  return [...extra, ...shape, ...validateState(judged).filter((p) => !reported.has(p.path))]
}

/** What `GET /api/state` answers besides the state: said plainly, since a round trip meets them first. */
const STRAY_KEYS: Record<string, string> = {
  revision: 'not part of a declared state: send If-Match: <revision> to apply only at a revision',
  rollouts: 'not part of a declared state: rollouts are kept as they are (POST /api/rollouts starts one)',
}

function emptyConfig(): ConfigFile {
  return { upstreams: {}, routes: [] }
}

function parseText(text: string): { value: unknown } | { problem: Problem } {
  // `{ token: ${X} }` would be a YAML error (`{` `}` end a plain scalar inside a flow mapping):
  // references are parsed as opaque words and put back, unsubstituted, into the parsed strings.
  const refs = hideReferences(text)
  const lineCounter = new LineCounter()
  const doc = parseDocument(refs.text, { lineCounter, prettyErrors: false })
  // Only the first error: later ones are mostly echoes of it (an unclosed bracket...).
  const error = doc.errors[0]
  if (error !== undefined) {
    const { line, col } = lineCounter.linePos(error.pos[0])
    return { problem: { path: '', message: `syntax error at line ${line}, column ${col}: ${error.message}` } }
  }
  try {
    return { value: refs.restore(doc.toJS()) }
  } catch (err) {
    // e.g. an alias to an undefined anchor, or too many alias expansions (billion laughs).
    return { problem: { path: '', message: `invalid YAML: ${(err as Error).message}` } }
  }
}

/** A reference on one line, or the `$${` escape, as the text pass sees them. */
const TEXT_REFERENCE = /\$\$\{|\$\{[^}\n]*\}/g

/**
 * Replaces each `${...}` (and `$${`) in the text with a word YAML reads as part of a plain
 * string anywhere (block or flow, quoted or not); `restore` puts the originals back into the
 * parsed tree's strings and keys. The words are on the same lines as the references, so
 * syntax errors keep their line numbers.
 */
function hideReferences(text: string): { text: string; restore: (value: unknown) => unknown } {
  if (!text.includes('${')) return { text, restore: (v) => v }
  let tag = 'syref'
  while (text.includes(tag)) tag += 'x'
  const originals: string[] = []
  const hidden = text.replace(TEXT_REFERENCE, (match) => `${tag}${originals.push(match) - 1}q`)
  const word = new RegExp(`${tag}(\\d+)q`, 'g')
  const put = (s: string) => s.replace(word, (_m, i: string) => originals[Number(i)]!)
  const restore = (node: unknown): unknown => {
    if (typeof node === 'string') return put(node)
    if (Array.isArray(node)) return node.map(restore)
    if (typeof node === 'object' && node !== null) return Object.fromEntries(Object.entries(node).map(([k, v]) => [put(k), restore(v)]))
    return node
  }
  return { text: hidden, restore }
}

// ---------------------------------------------------------------------------------------------
// Environment variables

interface Substituted {
  value: unknown
  problems: Problem[]
  /** Values that were exactly one `${VAR}`: candidates for number coercion. */
  whole: { segments: PathSegment[]; pointer: string }[]
  /** Values that still hold a reference (unset or malformed): not judged by the semantic pass. */
  unresolved: PathSegment[][]
}

// `$${` is an escaped literal `${`; `${...}` is a reference, checked below.
const REFERENCE = /\$\$\{|\$\{([^}]*)\}/g
const VARIABLE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s

/**
 * Substitutes `${VAR}` and `${VAR:-default}` (default when VAR is unset or empty, as in the
 * shell) in every string value of the parsed tree. Working on the tree, not the text, means
 * a variable's value is always one string: it cannot add keys or change the YAML structure.
 * Keys are not substituted.
 */
function substituteEnv(root: unknown, env: NodeJS.ProcessEnv): Substituted {
  const out: Substituted = { value: undefined, problems: [], whole: [], unresolved: [] }
  const walk = (node: unknown, segments: PathSegment[]): unknown => {
    if (typeof node === 'string') return substituteString(node, segments, env, out)
    if (Array.isArray(node)) return node.map((v, i) => walk(v, [...segments, i]))
    if (typeof node === 'object' && node !== null) {
      return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, walk(v, [...segments, k])]))
    }
    return node
  }
  out.value = walk(root, [])
  return out
}

function substituteString(s: string, segments: PathSegment[], env: NodeJS.ProcessEnv, out: Substituted): string {
  if (!s.includes('${')) return s
  const before = out.problems.length
  const result = s.replace(REFERENCE, (match, inner: string | undefined) => {
    if (inner === undefined) return '${' // the `$${` escape
    const m = VARIABLE.exec(inner)
    if (m === null) {
      out.problems.push({ path: formatPath(segments), message: `invalid variable reference ${JSON.stringify(match)}` })
      return match
    }
    const [, name = '', fallback] = m
    const value = env[name]
    if (fallback !== undefined) return value === undefined || value === '' ? fallback : value
    if (value === undefined) {
      out.problems.push({ path: formatPath(segments), message: `environment variable ${name} is not set` })
      return match
    }
    return value
  })
  if (out.problems.length > before) out.unresolved.push(segments)
  if (/^\$\{[^}]*\}$/.test(s)) out.whole.push({ segments, pointer: toPointer(segments) })
  return result
}

/**
 * `port: ${PORT}` yields the string "8080". Where the schema wants a number at a value that
 * was exactly one variable, and the string is an integer, it becomes that number. Driven by
 * the schema's own errors so a numeric token (`token: ${TOKEN}`) stays a string.
 */
function coerceNumbers(subst: Substituted): void {
  if (subst.whole.length === 0) return
  const wantsNumber = new Set(
    schemaErrors(subst.value)
      .filter((e) => e.keyword === 'type' && ['integer', 'number'].includes(String((e.params as { type?: unknown }).type)))
      .map((e) => e.instancePath),
  )
  for (const { segments, pointer } of subst.whole) {
    if (!wantsNumber.has(pointer)) continue
    const parent = segments.slice(0, -1).reduce<unknown>((node, s) => (node as Record<PathSegment, unknown>)[s], subst.value)
    const key = segments[segments.length - 1]
    if (key === undefined || typeof parent !== 'object' || parent === null) continue
    const container = parent as Record<PathSegment, unknown>
    const value = container[key]
    if (typeof value === 'string' && /^-?\d+$/.test(value)) container[key] = Number(value)
  }
}

function toPointer(segments: PathSegment[]): string {
  return segments.map((s) => '/' + String(s).replace(/~/g, '~0').replace(/\//g, '~1')).join('')
}

// ---------------------------------------------------------------------------------------------
// Cross-field checks of the static part

const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

/** Loopback: 127.0.0.0/8, ::1 (also IPv4-mapped, bracketed) and `localhost`. */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1')
  if (h === 'localhost' || h === 'localhost.') return true
  const family = isIP(h)
  if (family === 4) return LOOPBACK.check(h, 'ipv4')
  if (family === 6) return LOOPBACK.check(h, 'ipv6')
  return false
}

const WILDCARD = new Set(['', '0.0.0.0', '::', '[::]'])

/** Shorter admin tokens are refused off loopback and warned about on it (guessable by a scan). */
export const MIN_TOKEN_LENGTH = 16

/**
 * The admin tokens shorter than MIN_TOKEN_LENGTH, by config path (`admin.token`,
 * `admin.tokens.ci`): messages name the token, never show it. Safe on malformed input.
 */
export function shortAdminTokens(admin: unknown): { path: string; length: number }[] {
  if (!isObj(admin)) return []
  const out: { path: string; length: number }[] = []
  const check = (path: string, token: unknown) => {
    if (typeof token === 'string' && token.length < MIN_TOKEN_LENGTH) out.push({ path, length: token.length })
  }
  check('admin.token', admin['token'])
  const tokens = admin['tokens']
  if (isObj(tokens)) {
    for (const [name, entry] of Object.entries(tokens)) check(formatPath(['admin', 'tokens', name]), isObj(entry) ? entry['token'] : entry)
  }
  return out
}

/** What is wrong with a short token where admin is reachable from other machines. */
export function shortTokenMessage(length: number, adminHost: string): string {
  return `is ${length} characters; a token needs at least ${MIN_TOKEN_LENGTH} when admin listens on a non-loopback host (${adminHost}): generate one with \`openssl rand -hex 32\``
}

/** Whether two listeners on these hosts and the same port would collide. */
function hostsOverlap(a: string, b: string): boolean {
  if (a === b || WILDCARD.has(a) || WILDCARD.has(b)) return true
  return (a === 'localhost' && isLoopbackHost(b)) || (b === 'localhost' && isLoopbackHost(a))
}

/** Safe on malformed input like `validateState`: a value of the wrong type is not judged. */
function crossCheck(raw: unknown): Problem[] {
  const problems: Problem[] = []
  const config = isObj(raw) ? raw : {}
  const admin = isObj(config['admin']) ? config['admin'] : {}
  const listen = isObj(config['listen']) ? config['listen'] : {}
  const { token, tokens } = admin
  if (token !== undefined && tokens !== undefined) {
    problems.push({ path: 'admin', message: 'set either admin.token or admin.tokens, not both' })
  }
  const adminHost = admin['host'] ?? DEFAULTS.admin.host
  // A token or tokens map that is there but malformed counts as present: the shape check says the rest.
  const hasToken = token !== undefined || (tokens !== undefined && (!isObj(tokens) || Object.keys(tokens).length > 0))
  // An unauthenticated admin API must not be reachable from other machines.
  if (!hasToken && typeof adminHost === 'string' && !isLoopbackHost(adminHost)) {
    problems.push({ path: 'admin.host', message: 'binding admin to a non-loopback host requires admin.token or admin.tokens' })
  }
  // Off loopback a short token can be guessed by whoever reaches the port; on it only warned (at start).
  if (typeof adminHost === 'string' && !isLoopbackHost(adminHost)) {
    for (const { path, length } of shortAdminTokens(admin)) problems.push({ path, message: shortTokenMessage(length, adminHost) })
  }
  const listenHost = listen['host'] ?? DEFAULTS.listen.host
  const listenPort = listen['port'] ?? DEFAULTS.listen.port
  const adminPort = admin['port'] ?? DEFAULTS.admin.port
  // Port 0 asks the OS for a free port, so two zeros never clash.
  if (
    typeof listenPort === 'number' &&
    listenPort !== 0 &&
    listenPort === adminPort &&
    typeof listenHost === 'string' &&
    typeof adminHost === 'string' &&
    hostsOverlap(listenHost, adminHost)
  ) {
    problems.push({ path: 'admin.port', message: `same port as listen.port (${listenPort})` })
  }
  const tls = listen['tls']
  if (isObj(tls) && typeof tls['cert'] === 'string' && typeof tls['key'] === 'string') {
    try {
      readListenerTls({ cert: tls['cert'], key: tls['key'] })
    } catch (err) {
      problems.push({ path: 'listen.tls', message: (err as Error).message })
    }
  }
  return problems
}

