/**
 * Fleet telemetry: the histogram math as tables, the publisher's per-period increments from
 * real traffic through a real proxy, and `GET /api/stats` summing two instances on one Redis
 * (traffic through one, asked of the other) and the workers of one process (memory store).
 */
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { LATENCY_BOUNDS_MS, latencyBucket } from '../src/dataplane/stats.js'
import { addInto, percentile, trimmed } from '../src/telemetry/histogram.js'
import { startApp, type TestConfig } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { startLoad } from './helpers/load.js'
import { spawnProxy } from './helpers/proxy-process.js'
import { startRedis, type RedisServer } from './helpers/redis.js'
import { statusBackend } from './helpers/status-backend.js'

/** Counts with `n` requests in the bucket of `ms`. */
function counts(entries: [ms: number, n: number][]): number[] {
  const c = new Array<number>(64).fill(0)
  for (const [ms, n] of entries) c[latencyBucket(ms)]! += n
  return c
}

describe('percentile', () => {
  it.each([
    { name: 'empty', c: counts([]), q: 0.99, want: null },
    { name: 'one bucket: interpolated inside it', c: counts([[10, 100]]), q: 0.5, lo: LATENCY_BOUNDS_MS[latencyBucket(10) - 1]!, hi: LATENCY_BOUNDS_MS[latencyBucket(10)]! },
    { name: 'p99 of 99 fast and 1 slow is fast', c: counts([[1, 99], [300, 1]]), q: 0.99, lo: 0.8, hi: 1.25 },
    { name: 'p99 of 98 fast and 2 slow is slow', c: counts([[1, 98], [300, 2]]), q: 0.99, lo: 240, hi: 375 },
    { name: 'p50 splits two equal groups at the first', c: counts([[2, 50], [200, 50]]), q: 0.5, lo: 1.6, hi: 2.5 },
    { name: 'below 0.1 ms', c: counts([[0.05, 10]]), q: 1, lo: 0, hi: 0.1 },
  ])('$name', ({ c, q, want, lo, hi }) => {
    const p = percentile(c, q)
    if (want === null) expect(p).toBeNull()
    else {
      expect(p).toBeGreaterThanOrEqual(lo!)
      expect(p).toBeLessThanOrEqual(hi!)
    }
  })

  it('addInto sums histograms of different lengths; trimmed cuts trailing zeros only', () => {
    const into: number[] = [1, 2]
    addInto(into, [1, 0, 3])
    expect(into).toEqual([2, 2, 3])
    expect(trimmed([0, 1, 0, 2, 0, 0])).toEqual([0, 1, 0, 2])
    expect(trimmed(new Uint32Array(4))).toEqual([])
  })
})

let redis: RedisServer
beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  await redis?.stop()
})

describe('GET /api/stats', () => {
  it('two instances on one Redis: traffic through A, figures asked of B, errors and latency included', async () => {
    const v1 = await statusBackend('v1')
    const v2 = await statusBackend('v2', 500)
    const config: TestConfig = {
      store: { type: 'redis', url: redis.url, prefix: 'stats' },
      upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
      routes: [
        { name: 'ok', match: { pathPrefix: '/ok' }, split: { v1: 1 } },
        { name: 'bad', match: { pathPrefix: '/bad' }, split: { v2: 1 } },
      ],
    }
    const a = await startApp(config, { telemetryMs: 100 })
    const b = await startApp(config, { telemetryMs: 100 })
    for (let i = 0; i < 30; i++) await a.proxy('/ok')
    for (let i = 0; i < 10; i++) await a.proxy('/bad')
    const stats = await eventually(
      async () => {
        const res = await b.admin.get('/api/stats?window=10s')
        expect(res.status).toBe(200)
        const ok = res.body.routes.find((r: { route: string }) => r.route === 'ok')
        const bad = res.body.routes.find((r: { route: string }) => r.route === 'bad')
        expect(ok?.requests).toBe(30)
        expect(bad?.requests).toBe(10)
        // both report, the idle one too (A's samples can land before B's first period ends)
        expect(res.body.instances).toHaveLength(2)
        return res.body
      },
      { timeoutMs: 5000, intervalMs: 50 },
    )
    expect(stats.windowMs).toBe(10_000)
    const ok = stats.routes.find((r: { route: string }) => r.route === 'ok')
    const bad = stats.routes.find((r: { route: string }) => r.route === 'bad')
    expect(ok).toMatchObject({ upstream: 'v1', errors: 0, errorRate: 0, rate: 3 })
    expect(ok.p50Ms).toBeGreaterThan(0)
    expect(ok.p99Ms).toBeGreaterThanOrEqual(ok.p50Ms)
    expect(bad).toMatchObject({ upstream: 'v2', errors: 10, errorRate: 1 })
    expect(stats.upstreams.map((u: { upstream: string; route: null }) => [u.upstream, u.route])).toEqual([
      ['v1', null],
      ['v2', null],
    ])
    // a window is a window: nothing older than it
    expect((await b.admin.get('/api/stats?window=1s')).body.routes.length).toBeLessThanOrEqual(2)
  })

  it('refuses a malformed or out-of-range window with 400', async () => {
    const v1 = await statusBackend('v1')
    const a = await startApp({ upstreams: { v1: { targets: [{ url: v1.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
    for (const w of ['1h', 'abc', '500ms', '6m', '-1s']) {
      const res = await a.admin.get(`/api/stats?window=${w}`)
      expect(res.status, w).toBe(400)
      expect(res.body.error.code).toBe('VALIDATION_FAILED')
    }
    const fine = await a.admin.get('/api/stats')
    expect(fine.body).toMatchObject({ windowMs: 60_000, routes: [] })
  })

  it('--workers 2 (memory store): traffic spread over both workers is summed', async () => {
    const v1 = await statusBackend('v1')
    const p = await spawnProxy({ upstreams: { v1: { targets: [{ url: v1.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] }, ['--workers', '2'])
    onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
    const load = startLoad(p.url, { workers: 4, maxMs: 20_000 })
    // both workers must have served: their instance ids appear in the stats
    await eventually(
      async () => {
        const res = await request(p.adminUrl + '/api/stats?window=30s', { reset: true })
        const body = (await res.body.json()) as { instances: string[] }
        expect(body.instances).toHaveLength(2)
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    )
    const sent = (await load.stop()).length
    expect(v1.served).toBe(sent)
    const total = await eventually(
      async () => {
        const res = await request(p.adminUrl + '/api/stats?window=60s', { reset: true })
        const body = (await res.body.json()) as { routes: { requests: number }[] }
        expect(body.routes[0]?.requests).toBe(sent)
        return body.routes[0]!.requests
      },
      { timeoutMs: 5000, intervalMs: 100 },
    )
    expect(total).toBe(sent)
  })
})
