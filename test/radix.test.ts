import { describe, expect, it } from 'vitest'
import {
  emptyRadix,
  radixCheck,
  radixDeepest,
  radixEntries,
  radixFromEntries,
  radixGet,
  radixGetLower,
  radixSet,
  radixValues,
  RadixBuilder,
  type Radix,
} from '../src/dataplane/radix.js'
import { prng } from './helpers/random.js'

/** The labels below the root, as a nested picture: `{label: {…}}`, a value marked by `=v`. */
function shape(t: Radix<string>): unknown {
  const walk = (n: Radix<string>['root']): unknown =>
    Object.fromEntries(n.kids.map((k) => [k.value === undefined ? k.label : `${k.label}=${k.value}`, walk(k)]))
  return walk(t.root)
}

function setAll(pairs: [string, string | undefined][], t: Radix<string> = emptyRadix()): Radix<string> {
  for (const [k, v] of pairs) {
    t = radixSet(t, k, v)
    expect(radixCheck(t)).toBeNull()
  }
  return t
}

function sortedEntries(m: Map<string, string>): [string, string][] {
  return [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
}

describe('radix tree', () => {
  it('is empty at first', () => {
    const t = emptyRadix<string>()
    expect(t.size).toBe(0)
    expect(radixGet(t, '')).toBeUndefined()
    expect(radixGet(t, 'a')).toBeUndefined()
    expect(radixEntries(t)).toEqual([])
    expect(radixSet(t, 'a', undefined)).toBe(t)
  })

  it('holds the empty key at the root', () => {
    const t = setAll([['', 'root'], ['a', 'A']])
    expect(radixGet(t, '')).toBe('root')
    expect(radixGet(t, 'a')).toBe('A')
    expect(t.size).toBe(2)
    const u = setAll([['', undefined]], t)
    expect(radixGet(u, '')).toBeUndefined()
    expect(radixGet(u, 'a')).toBe('A')
    expect(u.size).toBe(1)
    expect(radixGet(t, '')).toBe('root')
  })

  it('keeps keys that are prefixes of others apart', () => {
    const t = setAll([['abc', '3'], ['a', '1'], ['ab', '2'], ['abcd', '4']])
    expect(shape(t)).toEqual({ 'a=1': { 'b=2': { 'c=3': { 'd=4': {} } } } })
    for (const [k, v] of [['a', '1'], ['ab', '2'], ['abc', '3'], ['abcd', '4']]) expect(radixGet(t, k!)).toBe(v)
    for (const k of ['', 'b', 'abcde', 'abd', 'ac']) expect(radixGet(t, k)).toBeUndefined()
  })

  it('splits an edge where two keys part, and at a key inside a label', () => {
    let t = setAll([['/api/users', 'u']])
    expect(shape(t)).toEqual({ '/api/users=u': {} })
    t = setAll([['/api/orders', 'o']], t)
    expect(shape(t)).toEqual({ '/api/': { 'orders=o': {}, 'users=u': {} } })
    t = setAll([['/api', 'a']], t)
    expect(shape(t)).toEqual({ '/api=a': { '/': { 'orders=o': {}, 'users=u': {} } } })
    t = setAll([['/ap', 'p']], t)
    expect(shape(t)).toEqual({ '/ap=p': { 'i=a': { '/': { 'orders=o': {}, 'users=u': {} } } } })
    expect(radixGet(t, '/api/')).toBeUndefined()
    expect(radixGet(t, '/api/user')).toBeUndefined()
  })

  it('prunes and merges nodes on removal', () => {
    let t = setAll([['/api/users', 'u'], ['/api/orders', 'o'], ['/api', 'a'], ['/b', 'b']])
    expect(shape(t)).toEqual({ '/': { 'api=a': { '/': { 'orders=o': {}, 'users=u': {} } }, 'b=b': {} } })
    // A valueless node left with one child merges into it.
    t = setAll([['/api/orders', undefined]], t)
    expect(shape(t)).toEqual({ '/': { 'api=a': { '/users=u': {} }, 'b=b': {} } })
    // A node whose value goes and that has one child merges with it.
    t = setAll([['/api', undefined]], t)
    expect(shape(t)).toEqual({ '/': { 'api/users=u': {}, 'b=b': {} } })
    // A leaf goes; its valueless parent with one child left merges.
    t = setAll([['/b', undefined]], t)
    expect(shape(t)).toEqual({ '/api/users=u': {} })
    t = setAll([['/api/users', undefined]], t)
    expect(shape(t)).toEqual({})
    expect(t.size).toBe(0)
  })

  it('ignores the removal of a missing key, and a set to the same value', () => {
    const t = setAll([['ab', 'x'], ['ac', 'y']])
    expect(radixSet(t, 'a', undefined)).toBe(t)
    expect(radixSet(t, 'abc', undefined)).toBe(t)
    expect(radixSet(t, 'ab', 'x')).toBe(t)
  })

  it('copies only the path it changes (old trees unchanged, untouched subtrees shared)', () => {
    const t = setAll([['/a/1', '1'], ['/a/2', '2'], ['/b/1', '3'], ['/b/2', '4']])
    const before = radixEntries(t)
    const u = radixSet(t, '/a/3', '5')
    expect(radixEntries(t)).toEqual(before)
    expect(radixGet(t, '/a/3')).toBeUndefined()
    expect(radixGet(u, '/a/3')).toBe('5')
    const slash = (x: Radix<string>) => x.root.kids[0]!
    expect(slash(u).kids[1]).toBe(slash(t).kids[1]) // '/b' subtree shared
    expect(slash(u).kids[0]).not.toBe(slash(t).kids[0])
    const v = radixSet(u, '/b/1', undefined)
    expect(radixGet(u, '/b/1')).toBe('3')
    expect(slash(v).kids[0]).toBe(slash(u).kids[0])
  })

  it('looks a key up case-folded, falling back to a prefix of it, in one walk', () => {
    const t = radixFromEntries([['example.com', 'e'], ['example.com:8080', 'p'], ['[::1]', 'v6'], ['ex', 'x']])
    expect(radixGetLower(t, 'EXAMPLE.com', -1)).toBe('e')
    expect(radixGetLower(t, 'Example.COM:8080', 11)).toBe('p') // the whole key first
    expect(radixGetLower(t, 'Example.COM:9090', -1)).toBeUndefined()
    expect(radixGetLower(t, 'Example.COM:9090', 11)).toBe('e')
    expect(radixGetLower(t, 'Example.COM:80', 11)).toBe('e') // fails inside the label ':8080'
    expect(radixGetLower(t, 'Example.COM:80800', 11)).toBe('e') // runs past the last node
    expect(radixGetLower(t, 'example.com:8090', 13)).toBeUndefined() // the prefix ends inside a label
    expect(radixGetLower(t, 'example.com:8080', 0)).toBe('p') // 0: no second try (the empty key)
    expect(radixGetLower(radixFromEntries([['', 'root']]), ':80', 0)).toBeUndefined()
    expect(radixGetLower(t, '[::1]:80', 5)).toBe('v6')
    expect(radixGetLower(t, '[::1]', 5)).toBe('v6')
    expect(radixGetLower(t, 'example.co', 2)).toBe('x')
    expect(radixGetLower(t, 'example.comm', -1)).toBeUndefined()
    expect(radixGetLower(t, 'EXAMPLEXcom', 2)).toBe('x')
    // A char ≥ 128 met on the way: the caller must fold with toLowerCase.
    expect(radixGetLower(t, 'exÄmple.com', -1)).toBeNull()
    expect(radixGetLower(t, 'Ä', -1)).toBeNull()
    // ...but not when the walk already failed on ASCII: toLowerCase would fail there too.
    expect(radixGetLower(t, 'zÄ', -1)).toBeUndefined()
  })

  it('visits the values whose key is a prefix of a string, deepest answer last', () => {
    const t = radixFromEntries([['', 0], ['/a', 1], ['/ab', 2], ['/a/b', 3], ['/abc/', 4], ['/b', 5]])
    const seen: number[] = []
    const pick = (v: number, limit: number) => {
      seen.push(v)
      return v <= limit ? v : undefined
    }
    expect(radixDeepest(t, '/abc', pick, 9)).toBe(2)
    expect(seen).toEqual([0, 1, 2])
    seen.length = 0
    expect(radixDeepest(t, '/abc/d', pick, 3)).toBe(2) // 4 refused: the deepest accepted wins
    expect(seen).toEqual([0, 1, 2, 4])
    seen.length = 0
    expect(radixDeepest(t, '', pick, 9)).toBe(0)
    expect(radixDeepest(emptyRadix<number>(), '/a', pick, 9)).toBeUndefined()
    expect(radixDeepest(radixFromEntries([['/x', 1]]), '/', pick, 9)).toBeUndefined()
  })

  it('builds from entries the same tree as one set at a time (later duplicates win)', () => {
    const pairs: [string, string][] = [['b', '1'], ['abc', '2'], ['a', '3'], ['abd', '4'], ['b', '5'], ['', '6'], ['abcdef', '7']]
    const built = radixFromEntries(pairs)
    expect(radixCheck(built)).toBeNull()
    const one = setAll(pairs)
    expect(shape(built)).toEqual(shape(one))
    expect(radixEntries(built)).toEqual(sortedEntries(new Map(pairs)))
    expect(radixValues(built)).toEqual(sortedEntries(new Map(pairs)).map(([, v]) => v))
    expect(built.size).toBe(6)
  })

  it('builds in place one key at a time, then refuses changes', () => {
    const b = new RadixBuilder<string>()
    const held = b.result
    b.set('/api/users', 'u')
    b.set('/api', 'a')
    b.set('/api/orders', 'o')
    b.set('/api', 'A')
    expect(b.size).toBe(3)
    expect(b.get('/api')).toBe('A')
    const t = b.finish()
    expect(t).toBe(held)
    expect(radixCheck(t)).toBeNull()
    expect(shape(t)).toEqual({ '/api=A': { '/': { 'orders=o': {}, 'users=u': {} } } })
    expect(() => b.set('/x', 'x')).toThrow(/after finish/)
    expect(radixGet(t, '/x')).toBeUndefined()
  })

  it('agrees with a Map over random sets and removals, every old version intact', () => {
    const seed = Number(process.env['SEED'] ?? 0) || (Date.now() % 1e9)
    for (const s of [1, 2, 3, seed]) {
      const rnd = prng(s)
      const alphabet = ['a', 'b', 'c', '/', 'ab', 'abc']
      const randomKey = () => {
        let k = ''
        const n = Math.floor(rnd() * 5)
        for (let i = 0; i < n; i++) k += alphabet[Math.floor(rnd() * alphabet.length)]
        return k
      }
      let t = emptyRadix<string>()
      let m = new Map<string, string>()
      const versions: [Radix<string>, Map<string, string>][] = []
      for (let step = 0; step < 2000; step++) {
        const key = randomKey()
        const value = rnd() < 0.4 ? undefined : String(step)
        t = radixSet(t, key, value)
        m = new Map(m)
        if (value === undefined) m.delete(key)
        else m.set(key, value)
        const where = `seed ${s} step ${step} key ${JSON.stringify(key)}`
        expect(radixCheck(t), where).toBeNull()
        expect(radixGet(t, key), where).toBe(value)
        if (step % 50 === 0) {
          expect(radixEntries(t), where).toEqual(sortedEntries(m))
          expect(shape(radixFromEntries(m)), where).toEqual(shape(t))
          versions.push([t, m])
        }
      }
      for (const [old, om] of versions) {
        expect(radixEntries(old), `seed ${s}`).toEqual(sortedEntries(om))
        expect(old.size, `seed ${s}`).toBe(om.size)
      }
    }
  })
})
