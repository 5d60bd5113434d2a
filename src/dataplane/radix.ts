// TEMPORARY stand-in (copy-on-write Map); replaced by the radix implementation (branch radix).
export interface Radix<V> { readonly size: number; readonly m: Map<string, V> }
export function emptyRadix<V>(): Radix<V> { return { size: 0, m: new Map() } }
export function radixGet<V>(t: Radix<V>, key: string): V | undefined { return t.m.get(key) }
export function radixSet<V>(t: Radix<V>, key: string, value: V | undefined): Radix<V> {
  const m = new Map(t.m); if (value === undefined) m.delete(key); else m.set(key, value); return { size: m.size, m }
}
export function radixFromEntries<V>(entries: Iterable<readonly [string, V]>): Radix<V> { const m = new Map(entries); return { size: m.size, m } }
export function radixEntries<V>(t: Radix<V>): [string, V][] { return [...t.m] }
