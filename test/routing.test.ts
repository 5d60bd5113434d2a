import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBackend, type Backend } from './helpers/backend.js'
import { hit, many } from './helpers/client.js'
import { startDataplane, type Seed, type TestDataplane } from './helpers/dataplane.js'

let a: Backend, b: Backend, c: Backend
beforeAll(async () => {
  ;[a, b, c] = await Promise.all([startBackend('a'), startBackend('b'), startBackend('c')])
})
afterAll(async () => {
  await Promise.all([a.close(), b.close(), c.close()])
})

function seed(routes: Seed['routes'], flags?: Seed['flags']): Seed {
  return {
    upstreams: { A: { targets: [{ url: a.url }] }, B: { targets: [{ url: b.url }] }, C: { targets: [{ url: c.url }] } },
    routes,
    flags,
  }
}

async function served(p: TestDataplane, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<string> {
  const res = await hit(p.url + path, { headers, method })
  return res.status === 200 ? String(res.headers['x-backend']) : `${res.status} ${res.json<{ error: { code: string } }>().error.code}`
}

describe('route choice: host, longest path prefix, methods', () => {
  let p: TestDataplane
  beforeAll(async () => {
    p = await startDataplane(
      seed([
        { name: 'all', match: { host: '*', pathPrefix: '/' }, split: { A: 1 } },
        { name: 'api', match: { pathPrefix: '/api' }, split: { B: 1 } },
        { name: 'api-v2', match: { pathPrefix: '/api/v2' }, split: { C: 1 } },
        { name: 'shop', match: { host: 'shop.example.com', pathPrefix: '/api' }, split: { C: 1 } },
        { name: 'shop-root', match: { host: 'shop.example.com' }, split: { B: 1 } },
        { name: 'writes', match: { pathPrefix: '/w', methods: ['POST', 'PUT'] }, split: { C: 1 } },
        { name: 'reads', match: { host: 'ro.example.com', pathPrefix: '/ro', methods: ['GET'] }, split: { B: 1 } },
      ]),
    )
  })
  afterAll(() => p.close())

  it.each([
    ['/', {}, 'GET', 'a'],
    ['/anything/else', {}, 'GET', 'a'],
    ['/api', {}, 'GET', 'b'],
    ['/api/users?x=1', {}, 'GET', 'b'],
    ['/api/v2/users', {}, 'GET', 'c'], // longest prefix wins over /api
    ['/api/v2', { host: 'shop.example.com' }, 'GET', 'c'], // exact-host /api beats * /api/v2? no: longer prefix first
    ['/api/x', { host: 'shop.example.com' }, 'GET', 'c'], // exact host, same prefix length as *: exact host wins
    ['/api/x', { host: 'SHOP.example.com:8080' }, 'GET', 'c'], // host is case-insensitive, port ignored
    ['/other', { host: 'shop.example.com' }, 'GET', 'b'],
    ['/other', { host: 'unknown.example.com' }, 'GET', 'a'],
    ['/w/1', {}, 'POST', 'c'],
    ['/w/1', {}, 'PUT', 'c'],
    ['/w/1', {}, 'GET', 'a'], // methods filter: falls to the next route
    ['/ro/1', { host: 'ro.example.com' }, 'GET', 'b'],
    ['/ro/1', { host: 'ro.example.com' }, 'DELETE', 'a'],
  ])('%s host=%j %s → %s', async (path, headers, method, expected) => {
    expect(await served(p, path, headers as Record<string, string>, method)).toBe(expected)
  })

  it('answers 404 NO_ROUTE when nothing matches', async () => {
    const q = await startDataplane(seed([{ name: 'only', match: { host: 'only.example.com', pathPrefix: '/x' }, split: { A: 1 } }]))
    try {
      const res = await hit(q.url + '/y', { headers: { host: 'only.example.com' } })
      expect(res.status).toBe(404)
      expect(res.headers['content-type']).toBe('application/json')
      expect(res.json()).toEqual({ error: { code: 'NO_ROUTE', message: expect.any(String) } })
      expect(await served(q, '/x/1', { host: 'other.example.com' })).toBe('404 NO_ROUTE')
      expect(await served(q, '/x/1', { host: 'only.example.com' })).toBe('a')
    } finally {
      await q.close()
    }
  })
})

describe('rules: header, cookie, query; first match wins', () => {
  let p: TestDataplane
  beforeAll(async () => {
    p = await startDataplane(
      seed([
        {
          name: 'api',
          rules: [
            { match: { header: { 'X-Api-Version': '2' } }, upstream: 'B' },
            { match: { header: { 'x-tenant': { regex: '^acme-[0-9]+$' } } }, upstream: 'C' },
            { match: { cookie: { canary: 'always' } }, upstream: 'B' },
            { match: { query: { beta: '1' } }, upstream: 'C' },
            { match: { header: { 'x-a': 'yes' }, query: { b: 'yes' } }, upstream: 'B' }, // all conditions of a rule must hold
            { match: { header: { 'x-version': '2' } }, upstream: 'C' },
            { match: { header: { 'x-env': 'Beta' } }, upstream: 'C' },
          ],
          split: { A: 1 },
        },
      ]),
    )
  })
  afterAll(() => p.close())

  it.each<[string, string, Record<string, string> | string[], string]>([
    ['no rule matches → split', '/', {}, 'a'],
    ['header exact', '/', { 'x-api-version': '2' }, 'b'],
    ['header name is case-insensitive', '/', { 'X-API-VERSION': '2' }, 'b'],
    ['header value is case-sensitive', '/', { 'x-env': 'beta' }, 'a'],
    ['header value matches with its case', '/', { 'x-env': 'Beta' }, 'c'],
    ['header value exact, not prefix', '/', { 'x-api-version': '20' }, 'a'],
    ['header regex', '/', { 'x-tenant': 'acme-42' }, 'c'],
    ['header regex anchored', '/', { 'x-tenant': 'acme-42x' }, 'a'],
    ['repeated header: any value counts', '/', ['x-version', '1', 'x-version', '2'], 'c'],
    ['cookie', '/', { cookie: 'a=1; canary=always; b=2' }, 'b'],
    ['cookie quoted', '/', { cookie: 'canary="always"' }, 'b'],
    ['cookie value exact', '/', { cookie: 'canary=alwaysx' }, 'a'],
    ['cookie name exact', '/', { cookie: 'xcanary=always' }, 'a'],
    ['query', '/p?beta=1', {}, 'c'],
    ['query among many', '/p?x=2&beta=1', {}, 'c'],
    ['query repeated: any value counts', '/p?beta=0&beta=1', {}, 'c'],
    ['query value exact', '/p?beta=10', {}, 'a'],
    ['query name not in path', '/beta=1', {}, 'a'],
    ['all conditions of one rule: both hold', '/p?b=yes', { 'x-a': 'yes' }, 'b'],
    ['all conditions of one rule: one missing', '/p?b=no', { 'x-a': 'yes' }, 'a'],
    ['first match wins', '/p?beta=1', { 'x-api-version': '2' }, 'b'],
  ])('%s', async (_name, path, headers, expected) => {
    const res = await hit(p.url + path, { headers })
    expect(res.status).toBe(200)
    expect(res.headers['x-backend']).toBe(expected)
  })
})

describe('split and sticky', () => {
  it('splits 10,000 requests within ±3 points of the weights', async () => {
    const p = await startDataplane(seed([{ name: 'api', split: { A: 70, B: 20, C: 10 } }]))
    try {
      const names = await many(10_000, 64, async () => String((await hit(p.url + '/')).headers['x-backend']))
      const share = (n: string) => (names.filter((x) => x === n).length / names.length) * 100
      expect(Math.abs(share('a') - 70)).toBeLessThanOrEqual(3)
      expect(Math.abs(share('b') - 20)).toBeLessThanOrEqual(3)
      expect(Math.abs(share('c') - 10)).toBeLessThanOrEqual(3)
    } finally {
      await p.close()
    }
  })

  it.each([
    ['header', { by: 'header', name: 'x-user-id' }, (u: string) => ({ 'x-user-id': u })],
    ['cookie', { by: 'cookie', name: 'uid' }, (u: string) => ({ cookie: `theme=dark; uid=${u}` })],
  ] as const)('sticky by %s: 2,000 users keep their upstream and stay on the growing one through 90/10 → 80/20 → 50/50', async (_n, sticky, headersOf) => {
    const route = (a: number, b: number) => [{ name: 'api', split: { A: a, B: b }, sticky: { ...sticky } }]
    const p = await startDataplane(seed(route(90, 10)))
    try {
      const users = Array.from({ length: 2000 }, (_, i) => `user-${i}`)
      const placement = async () => many(users.length, 64, async (i) => String((await hit(p.url + '/', { headers: headersOf(users[i]!) })).headers['x-backend']))
      let prev = await placement()
      // The same user lands on the same upstream every time for a given split.
      expect(await placement()).toEqual(prev)
      const onB = (xs: string[]) => xs.filter((x) => x === 'b').length / xs.length
      expect(Math.abs(onB(prev) - 0.1)).toBeLessThan(0.03)
      for (const [wa, wb] of [
        [80, 20],
        [50, 50],
      ] as const) {
        p.apply(seed(route(wa, wb)))
        const now = await placement()
        for (let i = 0; i < users.length; i++) if (prev[i] === 'b') expect(now[i], users[i]).toBe('b')
        expect(Math.abs(onB(now) - wb / 100)).toBeLessThan(0.04)
        prev = now
      }
    } finally {
      await p.close()
    }
  })

  it('sticky by ip: one client address always lands on the same upstream', async () => {
    const p = await startDataplane(seed([{ name: 'api', split: { A: 50, B: 50 }, sticky: { by: 'ip' } }]))
    try {
      const names = await many(200, 16, async () => String((await hit(p.url + '/')).headers['x-backend']))
      expect(new Set(names).size).toBe(1)
    } finally {
      await p.close()
    }
  })

  it('without a key, a sticky route falls back to the weighted split per request', async () => {
    const p = await startDataplane(seed([{ name: 'api', split: { A: 50, B: 50 }, sticky: { by: 'header', name: 'x-user-id' } }]))
    try {
      const names = await many(400, 16, async () => String((await hit(p.url + '/')).headers['x-backend']))
      expect(new Set(names)).toEqual(new Set(['a', 'b']))
    } finally {
      await p.close()
    }
  })
})

describe('flags header', () => {
  it('passes x-switchyard-flags decided per user, and never a client-sent one', async () => {
    const p = await startDataplane(
      seed([{ name: 'api', split: { A: 1 } }], {
        on: { enabled: true },
        off: { enabled: false, percent: 100 },
        half: { enabled: true, percent: 50, by: { header: 'x-user-id' } },
      }),
    )
    try {
      const flagsOf = async (user?: string) => {
        const headers: Record<string, string> = { 'x-switchyard-flags': 'spoofed=on', 'X-Switchyard-Internal': 'x' }
        if (user) headers['x-user-id'] = user
        const body = (await hit(p.url + '/', { headers })).json<{ rawHeaders: string[] }>()
        const raw = body.rawHeaders
        const values = raw.filter((_, i) => i % 2 === 0 && raw[i]!.toLowerCase().startsWith('x-switchyard-')).map((n) => `${n}:${raw[raw.indexOf(n) + 1]}`)
        expect(values).toHaveLength(1)
        return values[0]!.slice('x-switchyard-flags:'.length)
      }
      expect(await flagsOf()).toBe('on=on,off=off,half=off')
      const users = Array.from({ length: 400 }, (_, i) => `u${i}`)
      const results = await many(users.length, 16, (i) => flagsOf(users[i]))
      const halfOn = results.filter((r) => r.includes('half=on')).length / users.length
      expect(halfOn).toBeGreaterThan(0.4)
      expect(halfOn).toBeLessThan(0.6)
      // deterministic per user
      expect(await flagsOf('u1')).toBe(results[1])
    } finally {
      await p.close()
    }
  })
})
