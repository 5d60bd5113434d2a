/**
 * A persistent radix tree (compressed trie) keyed by strings. Immutable once built: `radixSet`
 * returns a new tree that copies only the nodes on the key's path and shares every other node
 * with the old one, so readers holding the old tree (requests in flight) see it unchanged, and
 * an update costs the key's length and the fan-out along its path, never the number of keys.
 *
 * Lookups walk the key with `charCodeAt` and `startsWith(label, i)`: no slicing, no arrays, no
 * closures, so they allocate nothing.
 */

/** A tree node. Every node is made by `node()` so they all share one hidden class (monomorphic reads). */
export interface RadixNode<V> {
  /** the label of the edge from the parent ('' for the root); non-empty below the root */
  readonly label: string
  /** undefined: no key ends here */
  readonly value: V | undefined
  /** first char code of each child's label, ascending (parallel to `kids`) */
  readonly codes: readonly number[]
  readonly kids: readonly RadixNode<V>[]
}

export interface Radix<V> {
  readonly size: number
  /** @internal */
  readonly root: RadixNode<V>
}

function node<V>(label: string, value: V | undefined, codes: readonly number[], kids: readonly RadixNode<V>[]): RadixNode<V> {
  return { label, value, codes, kids }
}

const EMPTY: Radix<never> = { size: 0, root: node<never>('', undefined, [], []) }

export function emptyRadix<V>(): Radix<V> {
  return EMPTY
}

/** Index of the child whose label starts with `code`, or -1. */
function childAt(codes: readonly number[], code: number): number {
  let lo = 0
  let hi = codes.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const c = codes[mid]!
    if (c === code) return mid
    if (c < code) lo = mid + 1
    else hi = mid - 1
  }
  return -1
}

/** Where a child starting with `code` goes in `codes`. */
function insertionPoint(codes: readonly number[], code: number): number {
  let lo = 0
  let hi = codes.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (codes[mid]! < code) lo = mid + 1
    else hi = mid
  }
  return lo
}

export function radixGet<V>(t: Radix<V>, key: string): V | undefined {
  let n = t.root
  let i = 0
  while (i < key.length) {
    const k = childAt(n.codes, key.charCodeAt(i))
    if (k < 0) return undefined
    n = n.kids[k]!
    if (!key.startsWith(n.label, i)) return undefined
    i += n.label.length
  }
  return n.value
}

/** ASCII lower case of a char code (A-Z only). */
function lower(c: number): number {
  return c >= 65 && c <= 90 ? c + 32 : c
}

/**
 * The value for `s` lower-cased, or failing that for its first `alt` chars lower-cased
 * (`alt` ≤ 0: no second try), in one walk and without making a string; for keys stored in lower
 * case. Only ASCII letters are folded, so it returns null as soon as it meets a char ≥ 128
 * (`toLowerCase` folds those too, sometimes changing the length): the caller then makes the
 * strings. Values must not be null.
 */
export function radixGetLower<V>(t: Radix<V>, s: string, alt: number): V | undefined | null {
  let n = t.root
  let i = 0
  // Found only at a node boundary: an `alt` inside a label names no key.
  let fallback: V | undefined
  const at = alt > 0 ? alt : -1
  const end = s.length
  while (i < end) {
    if (i === at) fallback = n.value
    const c = s.charCodeAt(i)
    if (c >= 128) return null
    const k = childAt(n.codes, lower(c))
    if (k < 0) return fallback
    n = n.kids[k]!
    const label = n.label
    const stop = Math.min(end, i + label.length)
    // The first char matched through `codes`.
    for (let j = i + 1; j < stop; j++) {
      const d = s.charCodeAt(j)
      if (d >= 128) return null
      if (lower(d) !== label.charCodeAt(j - i)) return fallback
    }
    if (i + label.length > end) return fallback
    i += label.length
  }
  return n.value ?? fallback
}

/**
 * The deepest answer along `s`: for each key that is a prefix of `s` (shortest first), calls
 * `pick(value, arg)` and returns the last answer that was not undefined. `pick` and `arg` are
 * separate so callers pass a module-level function and no closure is made per call.
 */
export function radixDeepest<V, A, R>(t: Radix<V>, s: string, pick: (value: V, arg: A) => R | undefined, arg: A): R | undefined {
  let best: R | undefined
  let n = t.root
  let i = 0
  for (;;) {
    if (n.value !== undefined) {
      const r = pick(n.value, arg)
      if (r !== undefined) best = r
    }
    if (i >= s.length) return best
    const k = childAt(n.codes, s.charCodeAt(i))
    if (k < 0) return best
    n = n.kids[k]!
    if (!s.startsWith(n.label, i)) return best
    i += n.label.length
  }
}

/** Length of the common prefix of `label` and `key` from `i`. */
function common(label: string, key: string, i: number): number {
  const max = Math.min(label.length, key.length - i)
  let p = 0
  while (p < max && label.charCodeAt(p) === key.charCodeAt(i + p)) p++
  return p
}

function withKid<V>(n: RadixNode<V>, k: number, kid: RadixNode<V>): RadixNode<V> {
  const kids = n.kids.slice()
  kids[k] = kid
  return node(n.label, n.value, n.codes, kids)
}

function spliced<T>(a: readonly T[], at: number, remove: number, ...add: T[]): T[] {
  const out = a.slice()
  out.splice(at, remove, ...add)
  return out
}

/** `n` (at key offset `i`) with `key` set to `value`; copies the path only. */
function put<V>(n: RadixNode<V>, key: string, i: number, value: V): RadixNode<V> {
  if (i === key.length) return node(n.label, value, n.codes, n.kids)
  const code = key.charCodeAt(i)
  const k = childAt(n.codes, code)
  if (k < 0) {
    const at = insertionPoint(n.codes, code)
    const leaf = node<V>(key.slice(i), value, [], [])
    return node(n.label, n.value, spliced(n.codes, at, 0, code), spliced(n.kids, at, 0, leaf))
  }
  const kid = n.kids[k]!
  const p = common(kid.label, key, i)
  if (p === kid.label.length) return withKid(n, k, put(kid, key, i + p, value))
  // Split the edge: a new node for the shared part, the old child below it.
  const rest = node(kid.label.slice(p), kid.value, kid.codes, kid.kids)
  const restCode = rest.label.charCodeAt(0)
  let mid: RadixNode<V>
  if (i + p === key.length) {
    mid = node(kid.label.slice(0, p), value, [restCode], [rest])
  } else {
    const leaf = node<V>(key.slice(i + p), value, [], [])
    const leafCode = leaf.label.charCodeAt(0)
    mid = restCode < leafCode
      ? node<V>(kid.label.slice(0, p), undefined, [restCode, leafCode], [rest, leaf])
      : node<V>(kid.label.slice(0, p), undefined, [leafCode, restCode], [leaf, rest])
  }
  return withKid(n, k, mid)
}

/**
 * A non-root node put back in shape after a removal below or at it: null when it holds nothing
 * (pruned), merged into its only child when it holds no value (no chain of empty nodes).
 */
function tidy<V>(n: RadixNode<V>): RadixNode<V> | null {
  if (n.value !== undefined) return n
  if (n.kids.length === 0) return null
  if (n.kids.length === 1) {
    const kid = n.kids[0]!
    return node(n.label + kid.label, kid.value, kid.codes, kid.kids)
  }
  return n
}

/** `n` (at key offset `i`) without `key`, which is known to be in it. */
function drop<V>(n: RadixNode<V>, key: string, i: number, root: boolean): RadixNode<V> | null {
  let out: RadixNode<V>
  if (i === key.length) {
    out = node<V>(n.label, undefined, n.codes, n.kids)
  } else {
    const k = childAt(n.codes, key.charCodeAt(i))
    const kid = n.kids[k]!
    const next = drop(kid, key, i + kid.label.length, false)
    out = next === null
      ? node(n.label, n.value, spliced(n.codes, k, 1), spliced(n.kids, k, 1))
      : withKid(n, k, next)
  }
  return root ? out : tidy(out)
}

/** A new tree with `key` set to `value` (undefined removes it); `t` is left unchanged. */
export function radixSet<V>(t: Radix<V>, key: string, value: V | undefined): Radix<V> {
  const old = radixGet(t, key)
  if (old === value) return t
  if (value === undefined) return { size: t.size - 1, root: drop(t.root, key, 0, true)! }
  return { size: old === undefined ? t.size + 1 : t.size, root: put(t.root, key, 0, value) }
}

/** A mutable node, only while `radixFromEntries` builds its own fresh tree. */
interface Draft<V> {
  label: string
  value: V | undefined
  codes: number[]
  kids: Draft<V>[]
}

/** The node for `key` in a draft tree, made (valueless) when missing, splitting an edge if need be. */
function draftNode<V>(root: Draft<V>, key: string): Draft<V> {
  let n = root
  let i = 0
  for (;;) {
    if (i === key.length) return n
    const code = key.charCodeAt(i)
    const k = childAt(n.codes, code)
    if (k < 0) {
      const at = insertionPoint(n.codes, code)
      const leaf = node<V>(key.slice(i), undefined, [], []) as Draft<V>
      n.codes.splice(at, 0, code)
      n.kids.splice(at, 0, leaf)
      return leaf
    }
    const kid = n.kids[k]!
    const p = common(kid.label, key, i)
    if (p < kid.label.length) {
      const rest = node(kid.label.slice(p), kid.value, kid.codes, kid.kids) as Draft<V>
      kid.label = kid.label.slice(0, p)
      kid.value = undefined
      kid.codes = [rest.label.charCodeAt(0)]
      kid.kids = [rest]
    }
    n = kid
    i += p
  }
}

/**
 * Builds a fresh tree in place, one key at a time (O(key length) each), so a large build can be
 * spread over slices of work; `finish()` hands over the tree, after which the builder refuses
 * changes. The tree is not readable as a Radix before that.
 */
export class RadixBuilder<V> {
  private readonly tree: { size: number; readonly root: Draft<V> } = { size: 0, root: node<V>('', undefined, [], []) as Draft<V> }
  private done = false

  get size(): number {
    return this.tree.size
  }

  get(key: string): V | undefined {
    return radixGet(this.tree, key)
  }

  /** Sets `key` (the last value set wins). */
  set(key: string, value: V): void {
    if (this.done) throw new Error('RadixBuilder: set after finish')
    const n = draftNode(this.tree.root, key)
    if (n.value === undefined) this.tree.size++
    n.value = value
  }

  /**
   * The tree `finish()` will return (the same object, filled in place), so a builder of trees of
   * trees can hold it from the start. Not to be read before `finish()`.
   */
  get result(): Radix<V> {
    return this.tree
  }

  finish(): Radix<V> {
    this.done = true
    return this.tree
  }
}

/** A tree of `entries` (later duplicates win), built in place: O(total key length). */
export function radixFromEntries<V>(entries: Iterable<readonly [string, V]>): Radix<V> {
  const b = new RadixBuilder<V>()
  for (const [key, value] of entries) if (value !== undefined) b.set(key, value)
  return b.size === 0 ? emptyRadix() : b.finish()
}

/** Every key and value, in key order (UTF-16 code units). For tests and debugging. */
export function radixEntries<V>(t: Radix<V>): [string, V][] {
  const out: [string, V][] = []
  const walk = (n: RadixNode<V>, prefix: string): void => {
    const key = prefix + n.label
    if (n.value !== undefined) out.push([key, n.value])
    for (const kid of n.kids) walk(kid, key)
  }
  walk(t.root, '')
  return out
}

/** Every value, in key order, without building the keys. */
export function radixValues<V>(t: Radix<V>): V[] {
  const out: V[] = []
  const walk = (n: RadixNode<V>): void => {
    if (n.value !== undefined) out.push(n.value)
    for (const kid of n.kids) walk(kid)
  }
  walk(t.root)
  return out
}

/**
 * Checks the shape invariants (for tests): labels non-empty below the root, `codes` matching
 * the labels and ascending, no empty leaf, no valueless node with a single child, `size` right.
 * Returns the first problem found, or null.
 */
export function radixCheck<V>(t: Radix<V>): string | null {
  let count = 0
  const walk = (n: RadixNode<V>, key: string, root: boolean): string | null => {
    if (n.value !== undefined) count++
    if (!root) {
      if (n.label === '') return `empty label under ${JSON.stringify(key)}`
      if (n.value === undefined && n.kids.length === 0) return `empty leaf at ${JSON.stringify(key)}`
      if (n.value === undefined && n.kids.length === 1) return `unmerged node at ${JSON.stringify(key)}`
    }
    if (n.codes.length !== n.kids.length) return `codes/kids length at ${JSON.stringify(key)}`
    for (let k = 0; k < n.kids.length; k++) {
      if (n.codes[k] !== n.kids[k]!.label.charCodeAt(0)) return `code mismatch at ${JSON.stringify(key)}`
      if (k > 0 && n.codes[k - 1]! >= n.codes[k]!) return `codes not ascending at ${JSON.stringify(key)}`
      const bad = walk(n.kids[k]!, key + n.kids[k]!.label, false)
      if (bad !== null) return bad
    }
    return null
  }
  const bad = walk(t.root, '', true)
  if (bad !== null) return bad
  return count === t.size ? null : `size ${t.size}, counted ${count}`
}
