/**
 * Answer comparison for mirrored requests: pure functions, run off the response path once
 * both answers are in. What is compared: the status class, and for two JSON bodies within the
 * limit, their structure and values, ignoring fields by name at any depth.
 */

/** `$.user.name`, `$.items[2]`, `$["a b"]`: a JSONPath a reader can paste into jq-like tools. */
function child(path: string, key: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`
}

/**
 * Levels of nesting compared: a document within the body limit can nest tens of thousands of
 * levels (JSON.parse takes it), which a recursive walk must not follow to a stack overflow.
 */
export const MAX_DEPTH = 128

/**
 * The path of the first place where `b` differs from `a`, or null when they are equal apart
 * from the fields named in `ignore`. Object keys are visited in `a`'s order, then keys only
 * `b` has; arrays element by element (an element only one side has is the difference).
 * Values nested deeper than MAX_DEPTH are not compared.
 */
export function firstDifference(a: unknown, b: unknown, ignore: ReadonlySet<string>, path = '$', depth = 0): string | null {
  if (a === b || depth > MAX_DEPTH) return null
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return path
  if (Array.isArray(a) !== Array.isArray(b)) return path
  if (Array.isArray(a)) {
    const bb = b as unknown[]
    const n = Math.min(a.length, bb.length)
    for (let i = 0; i < n; i++) {
      const d = firstDifference(a[i], bb[i], ignore, `${path}[${i}]`, depth + 1)
      if (d !== null) return d
    }
    return a.length === bb.length ? null : `${path}[${n}]`
  }
  const ao = a as Record<string, unknown>
  const bo = b as Record<string, unknown>
  for (const key of Object.keys(ao)) {
    if (ignore.has(key)) continue
    if (!Object.hasOwn(bo, key)) return child(path, key)
    const d = firstDifference(ao[key], bo[key], ignore, child(path, key), depth + 1)
    if (d !== null) return d
  }
  for (const key of Object.keys(bo)) if (!ignore.has(key) && !Object.hasOwn(ao, key)) return child(path, key)
  return null
}

/** One side's answer as the comparison sees it. */
export interface Answer {
  status: number
  /** the body when it is JSON (by Content-Type, not encoded) and within the limit; else null */
  json: Buffer | null
}

export type Verdict = { kind: 'same' } | { kind: 'status' } | { kind: 'body'; jsonPath: string }

/** Same status class and, where both bodies are comparable JSON, the same document. */
export function compareAnswers(primary: Answer, shadow: Answer, ignore: ReadonlySet<string>): Verdict {
  if (((primary.status / 100) | 0) !== ((shadow.status / 100) | 0)) return { kind: 'status' }
  if (primary.json === null || shadow.json === null) return { kind: 'same' }
  // The common case of a faithful shadow: the same bytes need no parsing.
  if (primary.json.equals(shadow.json)) return { kind: 'same' }
  const a = parse(primary.json)
  const b = parse(shadow.json)
  // Neither parses: nothing structural to say. One parses: they differ at the root.
  if (a === INVALID && b === INVALID) return { kind: 'same' }
  if (a === INVALID || b === INVALID) return { kind: 'body', jsonPath: '$' }
  const d = firstDifference(a, b, ignore)
  return d === null ? { kind: 'same' } : { kind: 'body', jsonPath: d }
}

const INVALID = Symbol('invalid JSON')

function parse(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'))
  } catch {
    return INVALID
  }
}

/** Whether a response's raw headers say its body is JSON we can read (no Content-Encoding). */
export function isPlainJson(raw: readonly Buffer[]): boolean {
  let json = false
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length === 12 && name.toString('latin1').toLowerCase() === 'content-type') {
      const v = raw[i + 1]!.toString('latin1').toLowerCase()
      const type = v.split(';', 1)[0]!.trim()
      json = type === 'application/json' || type.endsWith('+json')
    } else if (name.length === 16 && name.toString('latin1').toLowerCase() === 'content-encoding') {
      const v = raw[i + 1]!.toString('latin1').trim().toLowerCase()
      if (v !== '' && v !== 'identity') return false
    }
  }
  return json
}
