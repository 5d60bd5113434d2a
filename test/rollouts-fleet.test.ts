/**
 * Rollouts across a fleet: the analysis judges traffic that went through other instances, and
 * when the driving process is SIGKILLed another takes the lease over and finishes the rollout
 * from the step it was on, each step applied once (on one Redis with two processes, and with
 * `--workers 2`).
 */
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { startApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { startLoad } from './helpers/load.js'
import { spawnProxy, type ProxyProcess } from './helpers/proxy-process.js'
import { startRedis, type RedisServer } from './helpers/redis.js'
import { statusBackend } from './helpers/status-backend.js'

let redis: RedisServer
beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  await redis?.stop()
})

async function get(base: string, path: string): Promise<any> {
  // a short timeout and no keep-alive: a socket to a process just killed must not stall the poll
  const res = await request(base + path, { headersTimeout: 2_000, bodyTimeout: 2_000, reset: true })
  return res.body.json()
}

async function post(base: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await request(base + path, {
    method: 'POST',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    reset: true,
  })
  return { status: res.statusCode, body: await res.body.json() }
}

const steps = [
  { weight: 10, pauseMs: 800 },
  { weight: 30, pauseMs: 800 },
  { weight: 60, pauseMs: 800 },
  { weight: 100, pauseMs: 800 },
]

async function backends() {
  return { v1: await statusBackend('v1'), v2: await statusBackend('v2') }
}

it('the analysis sees traffic that went through another instance (fleet-wide figures)', async () => {
  const { v1, v2 } = await backends()
  const config = {
    store: { type: 'redis' as const, url: redis.url, prefix: 'fleetwide' },
    upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
    routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100 } }],
  }
  const opts = { telemetryMs: 100, rolloutTickMs: 50, heartbeatMs: 200, instanceTtlMs: 1_000 }
  const a = await startApp(config, opts)
  await eventually(() => expect(a.app.rollouts.driving).toBe(true))
  const b = await startApp(config, opts)
  expect(b.app.rollouts.driving).toBe(false)
  // every request goes through b; a drives and judges
  const load = startLoad(b.app.proxyUrl, { workers: 2, maxMs: 30_000 })
  onTestFinished(() => load.stop().then(() => undefined))
  const started = await a.admin.post('/api/rollouts', { id: 'fw', route: 'api', from: 'v1', to: 'v2', steps: [{ weight: 50, pauseMs: 300 }], analysis: { intervalMs: 500, minRequests: 20 } })
  expect(started.status).toBe(201)
  const done = await eventually(
    async () => {
      const r = (await a.admin.get('/api/rollouts/fw')).body
      expect(r.phase).toBe('promoted')
      return r
    },
    { timeoutMs: 15_000, intervalMs: 50 },
  )
  expect(done.history.some((h: { event: string; verdict?: string }) => h.event === 'analysis' && h.verdict === 'pass')).toBe(true)
  expect((await load.stop()).filter((s) => s !== 200)).toEqual([])
  // b answers for the rollout too: the record lives in the shared state
  await eventually(async () => expect((await b.admin.get('/api/rollouts/fw')).body.phase).toBe('promoted'))
})

/** Waits for rollout `id` to be past step `index`; returns its record. */
function atStep(base: string, id: string, index: number) {
  return eventually(
    async () => {
      const r = await get(base, `/api/rollouts/${id}`)
      expect(r.stepIndex).toBeGreaterThanOrEqual(index)
      return r
    },
    { timeoutMs: 20_000, intervalMs: 50 },
  )
}

/** The audit log's rollout steps, oldest first: each step index must appear once. */
async function stepsOf(base: string, id: string): Promise<number[]> {
  const events = (await get(base, '/api/events?limit=1000')).events as { action: string; target: string; after: { stepIndex: number } }[]
  return events
    .filter((e) => e.target === `rollouts/${id}` && (e.action === 'rollout.step' || e.action === 'rollout.promoted'))
    .reverse()
    .map((e) => e.after.stepIndex)
}

describe('a driver SIGKILLed mid-rollout', () => {
  /** the survivor takes the lease over within 1 s, not the default 5 s */
  const rolloutLeaseMs = 1_000

  it('on one Redis with two processes: the other finishes from the step it was on', async () => {
    const { v1, v2 } = await backends()
    const config = {
      rolloutLeaseMs,
      store: { type: 'redis', url: redis.url, prefix: 'takeover' },
      upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100 } }],
    }
    const procs: ProxyProcess[] = [await spawnProxy(config), await spawnProxy(config)]
    for (const p of procs) onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
    // traffic through both, so the analysis has figures whichever survives
    const loads = procs.map((p) => startLoad(p.url, { workers: 2, maxMs: 40_000 }))
    onTestFinished(() => Promise.all(loads.map((l) => l.stop())).then(() => undefined))
    const started = await post(procs[0]!.adminUrl, '/api/rollouts', { id: 'tk', route: 'api', from: 'v1', to: 'v2', steps, analysis: { intervalMs: 500, minRequests: 5 } })
    expect(started.status).toBe(201)
    const mid = await atStep(procs[0]!.adminUrl, 'tk', 1)
    const pid = Number(String(mid.driver).split(':')[1])
    const victim = procs.find((p) => p.pid === pid)!
    const survivor = procs.find((p) => p !== victim)!
    expect(victim).toBeDefined()
    await victim.stop('SIGKILL')
    const atKill = (await get(survivor.adminUrl, '/api/rollouts/tk')).stepIndex as number
    const done = await eventually(
      async () => {
        const r = await get(survivor.adminUrl, '/api/rollouts/tk')
        expect(r.phase).toBe('promoted')
        return r
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    )
    expect(done.driver).not.toBe(mid.driver)
    expect(Number(String(done.driver).split(':')[1])).toBe(survivor.pid)
    // never from the start, never a step twice
    const applied = await stepsOf(survivor.adminUrl, 'tk')
    expect(applied).toEqual([1, 2, 3, 4])
    expect(atKill).toBeGreaterThanOrEqual(1)
    expect(done.history.filter((h: { event: string }) => h.event === 'started')).toHaveLength(1)
  })

  it('with --workers 2: the driving worker is SIGKILLed, the other finishes', async () => {
    const { v1, v2 } = await backends()
    const p = await spawnProxy(
      {
        rolloutLeaseMs,
        upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
        routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100 } }],
      },
      ['--workers', '2'],
    )
    onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
    await eventually(async () => expect(new Set(((await get(p.adminUrl, '/api/instances')).instances as { pid: number }[]).map((i) => i.pid)).size).toBe(2), { timeoutMs: 10_000 })
    const load = startLoad(p.url, { workers: 4, maxMs: 40_000 })
    onTestFinished(() => load.stop().then(() => undefined))
    const started = await post(p.adminUrl, '/api/rollouts', { id: 'wk', route: 'api', from: 'v1', to: 'v2', steps, analysis: { intervalMs: 500, minRequests: 5 } })
    expect(started.status).toBe(201)
    const mid = await atStep(p.adminUrl, 'wk', 1)
    const pid = Number(String(mid.driver).split(':')[1])
    expect(pid).not.toBe(p.pid)
    process.kill(pid, 'SIGKILL')
    const done = await eventually(
      async () => {
        const r = await get(p.adminUrl, '/api/rollouts/wk')
        expect(r.phase).toBe('promoted')
        return r
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    )
    expect(done.driver).not.toBe(mid.driver)
    expect(await stepsOf(p.adminUrl, 'wk')).toEqual([1, 2, 3, 4])
  })
})
