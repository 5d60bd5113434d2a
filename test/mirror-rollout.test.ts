/**
 * The rollout shadow step on real sockets: during it the route mirrors a share to `to` while
 * `to` keeps weight 0; its analysis judges the shadow side (errors, p99, mismatch rate); a v2
 * that answers differently fails the rollout before any user weight moves, and every end of the
 * rollout removes the mirror.
 */
import { describe, expect, it } from 'vitest'
import { startApp, type TestApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { startLoad } from './helpers/load.js'
import { shadowBackend, type ShadowBackend } from './helpers/shadow-backend.js'

const FAST = { telemetryMs: 100, rolloutTickMs: 50 }

async function setup(v2Name: (path: string) => string): Promise<{ a: TestApp; v1: ShadowBackend; v2: ShadowBackend }> {
  let n = 0
  const v1 = await shadowBackend('v1', (path) => ({ user: { name: 'ann', id: ++n }, path }))
  const v2 = await shadowBackend('v2', (path) => ({ user: { name: v2Name(path), id: ++n }, path }))
  const a = await startApp(
    {
      upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100 } }],
    },
    FAST,
  )
  return { a, v1, v2 }
}

const shadowRollout = {
  id: 's1',
  route: 'api',
  from: 'v1',
  to: 'v2',
  steps: [
    { shadow: 50, pauseMs: 300 },
    { weight: 50, pauseMs: 60_000 },
  ],
  shadow: { ignore: ['id'] },
  analysis: { intervalMs: 500, minRequests: 10 },
}

let i = 0
const paths = () => `/users/${i++ % 10}`

async function phase(a: TestApp, id: string, want: string | ((r: any) => boolean)) {
  return eventually(
    async () => {
      const r = (await a.admin.get(`/api/rollouts/${id}`)).body
      if (typeof want === 'string') expect(r.phase).toBe(want)
      else expect(want(r)).toBe(true)
      return r
    },
    { timeoutMs: 20_000, intervalMs: 25 },
  )
}

describe('rollout shadow step', () => {
  it('a v2 whose answers differ fails in its shadow step: no user weight ever moves, the mirror is removed', { timeout: 60_000 }, async () => {
    const { a, v2 } = await setup((path) => (path === '/users/7' ? 'bob' : 'ann'))
    const started = await a.admin.post('/api/rollouts', shadowRollout)
    expect(started.status).toBe(201)
    expect(started.body).toMatchObject({ phase: 'progressing', stepIndex: 0, weight: 0 })
    expect(started.body.message).toContain('shadow: 50 % of requests copied to v2')
    const during = (await a.admin.get('/api/routes/api')).body
    expect(during.split).toEqual({ v1: 100, v2: 0 })
    expect(during.mirror).toEqual({ upstream: 'v2', percent: 50, ignore: ['id'] })

    const load = startLoad(a.app.proxyUrl, { workers: 4, path: paths, maxMs: 30_000 })
    const failed = await phase(a, 's1', 'failed')
    const results = await load.stop()
    expect(results.filter((r) => r !== 200)).toEqual([])

    expect(failed.weight).toBe(0)
    expect(failed.stepIndex).toBe(0)
    expect(failed.analysis.verdict).toBe('fail')
    expect(failed.analysis.reason).toMatch(/mismatch rate .* > 0\.01 on v2 \(shadow\)/)
    expect(failed.analysis.shadow.mismatchRate).toBeGreaterThan(0.01)
    expect(failed.analysis.shadow.compared).toBeGreaterThanOrEqual(10)
    expect(failed.analysis.shadow.samples.length).toBeGreaterThan(0)
    for (const s of failed.analysis.shadow.samples) expect(s).toMatchObject({ path: '/users/7', kind: 'body', jsonPath: '$.user.name' })
    // Never a user weight: not in the history, not in any audited write, not at v2.
    expect(failed.history.every((h: { weight: number }) => h.weight === 0)).toBe(true)
    const events = (await a.admin.get('/api/events?limit=1000')).body.events as { target: string; after: { split?: Record<string, number> } | null }[]
    const splits = events.filter((e) => e.target === 'rollouts/s1').map((e) => e.after?.split?.['v2'] ?? 0)
    expect(splits.length).toBeGreaterThan(1)
    expect(splits.every((w) => w === 0)).toBe(true)
    expect(v2.received.length).toBeGreaterThan(0)
    expect(v2.received.every((r) => r.shadow === '1')).toBe(true)
    const after = (await a.admin.get('/api/routes/api')).body
    expect(after.split).toEqual({ v1: 100, v2: 0 })
    expect(after.mirror).toBeUndefined()
  })

  it('a v2 that answers alike (ignored fields aside) passes its shadow step, then gets weight; the mirror goes with the step', { timeout: 60_000 }, async () => {
    const { a, v2 } = await setup(() => 'ann')
    expect((await a.admin.post('/api/rollouts', shadowRollout)).status).toBe(201)
    const load = startLoad(a.app.proxyUrl, { workers: 4, path: paths, maxMs: 30_000 })
    const moved = await phase(a, 's1', (r) => r.stepIndex === 1)
    expect(moved.weight).toBe(50)
    const passed = moved.history.find((h: { event: string; verdict?: string }) => h.event === 'analysis' && h.verdict === 'pass')
    expect(passed.message).toMatch(/mismatch rate 0 \(0 of \d+ compared answers differ\)/)
    const route = (await a.admin.get('/api/routes/api')).body
    expect(route.split).toEqual({ v1: 50, v2: 50 })
    expect(route.mirror).toBeUndefined()
    // Users now reach v2 without the shadow marker.
    await eventually(() => expect(v2.received.some((r) => r.shadow === undefined)).toBe(true))
    expect((await a.admin.post('/api/rollouts/s1/abort')).status).toBe(200)
    expect((await load.stop()).filter((r) => r !== 200)).toEqual([])
  })

  it('refuses shadow steps after a weight step, and steps with both or neither of weight and shadow', async () => {
    const { a } = await setup(() => 'ann')
    for (const steps of [[{ weight: 10 }, { shadow: 20 }], [{ weight: 10, shadow: 20 }], [{ pauseMs: 10 }]]) {
      const res = await a.admin.post('/api/rollouts', { ...shadowRollout, steps })
      expect([JSON.stringify(steps), res.status]).toEqual([JSON.stringify(steps), 400])
    }
    expect((await a.admin.post('/api/rollouts', { ...shadowRollout, steps: [{ weight: 10 }] })).status).toBe(400) // shadow options without a shadow step
  })
})
