import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBackend, spawnBackend, type Backend } from './helpers/backend.js'
import { hit } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { startLoad } from './helpers/load.js'
import { startDataplane, type Seed } from './helpers/dataplane.js'

describe('zero failed requests', () => {
  it('a backend SIGKILLed under GET load fails no GET', async () => {
    const [k1, k2, k3] = await Promise.all([spawnBackend('k1'), spawnBackend('k2'), spawnBackend('k3')])
    const p = await startDataplane({
      upstreams: { v1: { targets: [{ url: k1.url }, { url: k2.url }, { url: k3.url }] } },
      routes: [{ name: 'r', split: { v1: 1 } }],
    })
    try {
      // slow responses keep requests in flight on the victim when it dies (resets before headers)
      let i = 0
      const l = startLoad(p.url, { workers: 32, path: () => (i++ % 2 ? '/delay?ms=20' : '/') })
      await eventually(() => expect(l.count()).toBeGreaterThan(300), { timeoutMs: 10_000 })
      await eventually(() => expect(p.inflight('v1', k2.id)).toBeGreaterThan(0), { timeoutMs: 5_000, intervalMs: 1 })
      await k2.kill('SIGKILL')
      const atKill = l.count()
      await eventually(() => expect(l.count()).toBeGreaterThan(atKill + 500), { timeoutMs: 10_000 })
      const results = await l.stop()
      const failed = results.filter((r) => r !== 200)
      expect(failed).toEqual([])
      expect(p.dp.resources.targets.get(`v1/${k2.id}`)!.healthy).toBe(false)
      expect(p.dp.resources.counters('v1').retries).toBeGreaterThan(0)
    } finally {
      await p.close()
      await Promise.all([k1.kill(), k2.kill(), k3.kill()])
    }
  })

  it('a routing table swapped every 10 ms under load fails no request', async () => {
    const backends: Backend[] = await Promise.all([startBackend('a'), startBackend('b'), startBackend('c')])
    const seeds: Seed[] = [
      {
        upstreams: { v1: { targets: [{ url: backends[0]!.url }, { url: backends[1]!.url }] }, v2: { targets: [{ url: backends[2]!.url }] } },
        routes: [{ name: 'r', split: { v1: 90, v2: 10 }, sticky: { by: 'header', name: 'x-user-id' } }],
      },
      {
        upstreams: { v1: { targets: [{ url: backends[1]!.url }] }, v2: { targets: [{ url: backends[2]!.url }, { url: backends[0]!.url }] } },
        routes: [
          { name: 'r', rules: [{ match: { query: { v: '2' } }, upstream: 'v2' }], split: { v1: 10, v2: 90 } },
          { name: 'x', match: { pathPrefix: '/x' }, split: { v2: 1 } },
        ],
      },
      {
        upstreams: { v2: { targets: [{ url: backends[2]!.url }] }, v3: { targets: [{ url: backends[0]!.url }] } },
        routes: [{ name: 'r', split: { v2: 50, v3: 50 } }],
      },
    ]
    const p = await startDataplane(seeds[0]!)
    try {
      let n = 0
      const swapper = setInterval(() => p.apply(seeds[++n % seeds.length]!), 10)
      const l = startLoad(p.url, { workers: 32, path: () => (n % 2 ? '/delay?ms=5' : '/?v=2') })
      await eventually(() => expect(n).toBeGreaterThan(150), { timeoutMs: 15_000 })
      clearInterval(swapper)
      const results = await l.stop()
      expect(results.length).toBeGreaterThan(500)
      expect(results.filter((r) => r !== 200)).toEqual([])
      expect(p.revision).toBeGreaterThan(150)
    } finally {
      await p.close()
      await Promise.all(backends.map((b) => b.close()))
    }
  })
})

describe('balancing', () => {
  let backends: Backend[]
  beforeAll(async () => {
    backends = await Promise.all(['a', 'b', 'c', 'd'].map((n) => startBackend(n)))
  })
  afterAll(async () => {
    await Promise.all(backends.map((b) => b.close()))
  })

  it('sends new requests only to active, healthy targets', async () => {
    const [a, b, c, d] = backends as [Backend, Backend, Backend, Backend]
    const p = await startDataplane({
      upstreams: {
        v1: {
          targets: [{ url: a.url }, { url: b.url, state: 'draining' }, { url: c.url, state: 'disabled' }, { url: d.url }],
        },
      },
      routes: [{ name: 'r', split: { v1: 1 } }],
    })
    try {
      p.dp.resources.targets.get(`v1/${d.id}`)!.activeCheck = true // so the passive timer does not bring it back
      p.dp.resources.targets.get(`v1/${d.id}`)!.healthy = false
      const seen = new Set<string>()
      for (let i = 0; i < 60; i++) seen.add(String((await hit(p.url + '/')).headers['x-backend']))
      expect([...seen]).toEqual(['a'])
    } finally {
      await p.close()
    }
  })

  it('spreads by least outstanding requests: a slow target gets fewer', async () => {
    const [a, b] = backends as [Backend, Backend]
    const p = await startDataplane({ upstreams: { v1: { targets: [{ url: a.url }, { url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
    try {
      // 4 slow requests pin target a or b; the fast ones then go to the other
      const slow = Array.from({ length: 4 }, () => hit(p.url + '/delay?ms=600'))
      await eventually(() => expect(p.inflight('v1', a.id) + p.inflight('v1', b.id)).toBe(4))
      const seen: string[] = []
      for (let i = 0; i < 20; i++) seen.push(String((await hit(p.url + '/')).headers['x-backend']))
      // equal load (2 and 2) → alternate; the round-robin start spreads ties
      expect(new Set(seen)).toEqual(new Set(['a', 'b']))
      await Promise.all(slow)
      const busy = hit(p.url + '/delay?ms=400')
      await eventually(() => expect(p.inflight('v1', a.id) + p.inflight('v1', b.id)).toBe(1))
      const busyId = p.inflight('v1', a.id) === 1 ? 'a' : 'b'
      for (let i = 0; i < 10; i++) expect((await hit(p.url + '/')).headers['x-backend']).not.toBe(busyId)
      await busy
    } finally {
      await p.close()
    }
  })
})
