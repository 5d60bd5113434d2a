/**
 * Rollouts end to end on real sockets: a proxy in this process (memory store) with real
 * backends and a real load, the driver judging from the fleet's figures, webhooks to a real
 * receiver. Fleet and process cases (Redis, SIGKILL, workers) are in rollouts-fleet.test.ts.
 */
import { createHmac } from 'node:crypto'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, expect, it, onTestFinished } from 'vitest'
import { startApp, type TestApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { startLoad } from './helpers/load.js'
import { statusBackend, type StatusBackend } from './helpers/status-backend.js'

/** Fast telemetry and driver for tests: figures every 100 ms, the driver looks every 50 ms. */
const FAST = { telemetryMs: 100, rolloutTickMs: 50 }

async function setup(toStatus = 200): Promise<{ a: TestApp; v1: StatusBackend; v2: StatusBackend }> {
  const v1 = await statusBackend('v1')
  const v2 = await statusBackend('v2', toStatus)
  const a = await startApp(
    {
      upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100 } }],
    },
    FAST,
  )
  return { a, v1, v2 }
}

const rollout = async (a: TestApp, id: string) => (await a.admin.get(`/api/rollouts/${id}`)).body

/** Waits until rollout `id` reaches `phase`; returns its record. */
function phase(a: TestApp, id: string, want: string, timeoutMs = 15_000) {
  return eventually(
    async () => {
      const r = await rollout(a, id)
      expect(r.phase).toBe(want)
      return r
    },
    { timeoutMs, intervalMs: 25 },
  )
}

const canary = (extra: Record<string, unknown> = {}) => ({
  id: 'c1',
  route: 'api',
  from: 'v1',
  to: 'v2',
  steps: [
    { weight: 20, pauseMs: 200 },
    { weight: 50, pauseMs: 200 },
    { weight: 100, pauseMs: 200 },
  ],
  analysis: { intervalMs: 400, minRequests: 5 },
  ...extra,
})

async function auditOf(a: TestApp, id: string): Promise<{ action: string; actor: string; reason: string; after: { stepIndex: number } }[]> {
  const events = (await a.admin.get('/api/events?limit=1000')).body.events as { action: string; actor: string; reason: string; target: string; after: { stepIndex: number } }[]
  return events.filter((e) => e.target === `rollouts/${id}`).reverse()
}

describe('canary', () => {
  it('a healthy canary promotes to 100 % with zero failed requests; every weight change is audited as rollout:<id>', async () => {
    const { a } = await setup()
    const load = startLoad(a.app.proxyUrl, { workers: 4, maxMs: 30_000 })
    const started = await a.admin.post('/api/rollouts', canary())
    expect(started.status).toBe(201)
    expect(started.body).toMatchObject({ id: 'c1', phase: 'progressing', stepIndex: 0, weight: 20 })
    const metrics = await (await fetch(a.app.adminUrl + '/metrics')).text()
    expect(metrics).toMatch(/switchyard_rollout_weight\{rollout="c1",upstream="v2"\} (20|50|100)\n/)
    const done = await phase(a, 'c1', 'promoted')
    const results = await load.stop()
    expect(results.filter((r) => r !== 200)).toEqual([])
    expect(done.weight).toBe(100)
    expect((await a.admin.get('/api/routes/api')).body.split).toEqual({ v1: 0, v2: 100 })
    const audit = await auditOf(a, 'c1')
    const steps = audit.filter((e) => e.action === 'rollout.step')
    expect(steps.map((e) => e.after.stepIndex)).toEqual([1, 2])
    for (const e of audit.filter((x) => x.action !== 'rollout.start')) {
      expect(e.actor).toBe('rollout:c1')
      expect(e.reason).toMatch(/./)
    }
    expect(audit.at(-1)!.action).toBe('rollout.promoted')
    expect(audit.at(-1)!.reason).toMatch(/analysis passed: .*requests/)
  })

  it('a canary whose `to` answers 30 % 500s is rolled back by itself at its first analyses', async () => {
    const { a, v2 } = await setup()
    // 3 answers in 10 fail
    let n = 0
    Object.defineProperty(v2, 'status', { get: () => (n++ % 10 < 3 ? 500 : 200) })
    const load = startLoad(a.app.proxyUrl, { workers: 4, maxMs: 30_000 })
    await a.admin.post('/api/rollouts', canary({ steps: [{ weight: 50, pauseMs: 60_000 }], analysis: { intervalMs: 500, minRequests: 20 } }))
    const failed = await phase(a, 'c1', 'failed')
    await load.stop()
    expect(failed).toMatchObject({ weight: 0, analysis: { verdict: 'fail' } })
    expect(failed.analysis.errorRate).toBeGreaterThan(0.2)
    expect(failed.message).toMatch(/error rate/)
    expect((await a.admin.get('/api/routes/api')).body.split).toEqual({ v1: 100, v2: 0 })
    // within 3 analysis intervals: at most 2 analyses were written before the one that failed it
    const audit = await auditOf(a, 'c1')
    expect(audit.filter((e) => e.action === 'rollout.analysis').length).toBeLessThanOrEqual(2)
    expect(audit.at(-1)!.action).toBe('rollout.failed')
  })

  it('a canary whose `to` adds 300 ms fails on p99', async () => {
    const { a, v2 } = await setup()
    v2.delayMs = 300
    const load = startLoad(a.app.proxyUrl, { workers: 8, maxMs: 30_000 })
    await a.admin.post('/api/rollouts', canary({ steps: [{ weight: 50, pauseMs: 60_000 }], analysis: { intervalMs: 1000, minRequests: 5, maxP99Ms: 200 } }))
    const failed = await phase(a, 'c1', 'failed')
    await load.stop()
    expect(failed.analysis.p99Ms).toBeGreaterThan(200)
    expect(failed.message).toMatch(/p99/)
  })

  it('no traffic at all is inconclusive: the rollout waits at its step and says so', async () => {
    const { a } = await setup()
    await a.admin.post('/api/rollouts', canary({ steps: [{ weight: 30, pauseMs: 0 }], analysis: { intervalMs: 200, minRequests: 5 } }))
    const first = await eventually(async () => {
      const r = await rollout(a, 'c1')
      expect(r.analysis?.verdict).toBe('inconclusive')
      return r
    })
    // two more analyses later, still waiting
    const later = await eventually(async () => {
      const r = await rollout(a, 'c1')
      expect(r.analysis.at).toBeGreaterThanOrEqual(first.analysis.at + 400)
      return r
    })
    expect(later).toMatchObject({ phase: 'progressing', stepIndex: 0, weight: 30, analysis: { verdict: 'inconclusive', requests: 0, failures: 0 } })
    expect(later.message).toMatch(/inconclusive: 0 of 5 requests/)
    expect((await a.admin.get('/api/routes/api')).body.split).toEqual({ v1: 70, v2: 30 })
  })

  it('pause holds the weight, resume continues, promote jumps to 100 %, abort restores 100 % from', async () => {
    const { a } = await setup()
    const load = startLoad(a.app.proxyUrl, { workers: 2, maxMs: 30_000 })
    onTestFinished(() => load.stop().then(() => undefined))
    await a.admin.post('/api/rollouts', canary({ steps: [{ weight: 10, pauseMs: 300 }, { weight: 40, pauseMs: 300 }, { weight: 70, pauseMs: 60_000 }] }))
    const paused = await a.admin.post('/api/rollouts/c1/pause')
    expect(paused.status).toBe(200)
    expect(paused.body).toMatchObject({ phase: 'paused', weight: 10 })
    // held across several analyses
    await eventually(async () => expect((await rollout(a, 'c1')).analysis?.verdict).toBe('pass'))
    await eventually(async () => {
      const r = await rollout(a, 'c1')
      expect(r.analysis.at - paused.body.updatedAt).toBeGreaterThan(800)
    })
    expect(await rollout(a, 'c1')).toMatchObject({ phase: 'paused', stepIndex: 0, weight: 10 })
    expect((await a.admin.post('/api/rollouts/c1/pause')).status).toBe(409)
    expect((await a.admin.post('/api/rollouts/c1/resume')).body).toMatchObject({ phase: 'progressing' })
    await eventually(async () => expect((await rollout(a, 'c1')).weight).toBe(70), { timeoutMs: 15_000 })
    const promoted = await a.admin.post('/api/rollouts/c1/promote')
    expect(promoted.body).toMatchObject({ phase: 'promoted', weight: 100 })
    expect((await a.admin.get('/api/routes/api')).body.split).toEqual({ v1: 0, v2: 100 })
    expect((await a.admin.post('/api/rollouts/c1/abort')).status).toBe(409)

    // abort, on a second rollout back from v2 to v1
    await a.admin.post('/api/rollouts', canary({ id: 'c2', from: 'v2', to: 'v1', steps: [{ weight: 25, pauseMs: 60_000 }] }))
    expect((await a.admin.get('/api/routes/api')).body.split).toEqual({ v2: 75, v1: 25 })
    const aborted = await a.admin.post('/api/rollouts/c2/abort')
    expect(aborted.body).toMatchObject({ phase: 'aborted', weight: 0 })
    expect((await a.admin.get('/api/routes/api')).body.split).toEqual({ v2: 100, v1: 0 })
  })

  it('a hand-made split write during a rollout answers 409; force=true aborts the rollout and writes', async () => {
    const { a } = await setup()
    await a.admin.post('/api/rollouts', canary({ steps: [{ weight: 10, pauseMs: 60_000 }] }))
    const refused = await a.admin.put('/api/routes/api/split', { v1: 50, v2: 50 })
    expect(refused.status).toBe(409)
    expect(refused.body.error.code).toBe('CONFLICT')
    expect(refused.body.error.message).toMatch(/rollout c1/)
    expect((await a.admin.put('/api/routes/api', { match: { pathPrefix: '/' }, split: { v1: 1 } })).status).toBe(409)
    expect((await a.admin.del('/api/routes/api')).status).toBe(409)
    expect((await a.admin.get('/api/routes/api')).body.split).toEqual({ v1: 90, v2: 10 })
    const forced = await a.admin.put('/api/routes/api/split?force=true', { v1: 50, v2: 50 })
    expect(forced.status).toBe(200)
    expect(await rollout(a, 'c1')).toMatchObject({ phase: 'aborted' })
    expect((await a.admin.get('/api/routes/api')).body.split).toEqual({ v1: 50, v2: 50 })
    expect((await a.admin.put('/api/routes/api/split?force=maybe', { v1: 1 })).status).toBe(400)
  })

  it('refuses a rollout that cannot run, with every reason', async () => {
    const { a } = await setup()
    const bad = await a.admin.post('/api/rollouts', { route: 'api', from: 'v1', to: 'nope', steps: [{ weight: 50 }, { weight: 20 }] })
    expect(bad.status).toBe(400)
    expect(bad.body.error.code).toBe('VALIDATION_FAILED')
    expect(bad.body.error.message).toMatch(/nope/)
    expect((await a.admin.post('/api/rollouts', { route: 'nope', from: 'v1', to: 'v2' })).status).toBe(400)
    expect((await a.admin.post('/api/rollouts', { route: 'api', from: 'v1', to: 'v2', steps: [{ weight: 101 }] })).status).toBe(400)
    expect((await a.admin.get('/api/rollouts/none')).status).toBe(404)
    expect((await a.admin.get('/api/state')).body.revision).toBe(1)
  })
})

describe('blue-green', () => {
  it('the preview header reaches `to` before the switch and nobody else does; then one switch', async () => {
    const { a } = await setup()
    const plain = startLoad(a.app.proxyUrl, { workers: 2, maxMs: 30_000 })
    const started = await a.admin.post('/api/rollouts', {
      id: 'bg',
      route: 'api',
      from: 'v1',
      to: 'v2',
      strategy: 'blue-green',
      preview: { pauseMs: 500 },
      // 10 preview requests below can never pass an analysis alone: no switch while we look
      analysis: { intervalMs: 1000, minRequests: 30 },
    })
    expect(started.status).toBe(201)
    const seen: string[] = []
    let preview = 0
    for (let i = 0; i < 10; i++) {
      const plainAnswer = await a.proxy('/x')
      const previewAnswer = await a.proxy('/x', { headers: { 'x-switchyard-preview': 'v2' } })
      seen.push(plainAnswer.backend!)
      if (previewAnswer.backend === 'v2') preview++
    }
    expect(new Set(seen)).toEqual(new Set(['v1']))
    expect(preview).toBe(10)
    // preview traffic feeds the analysis until the switch
    const feeder = startLoad(a.app.proxyUrl, { workers: 1, maxMs: 30_000 })
    const previewLoad = (async () => {
      for (const deadline = Date.now() + 20_000; Date.now() < deadline; ) {
        const r = await rollout(a, 'bg')
        if (r.phase !== 'progressing') return
        await a.proxy('/x', { headers: { 'x-switchyard-preview': 'v2' } })
      }
    })()
    const before = await plain.stop()
    const done = await phase(a, 'bg', 'promoted')
    await previewLoad
    await feeder.stop()
    expect(before.filter((s) => s !== 200)).toEqual([])
    expect(done.weight).toBe(100)
    const route = (await a.admin.get('/api/routes/api')).body
    expect(route.split).toEqual({ v1: 0, v2: 100 })
    expect(route.rules ?? []).toEqual([])
    expect((await a.proxy('/x')).backend).toBe('v2')
  })
})

describe('webhooks', () => {
  it('phase and step changes are POSTed with a valid signature; a 500 is retried', async () => {
    const got: { headers: IncomingHttpHeaders; body: string }[] = []
    let calls = 0
    const receiver = createServer((req, res) => {
      let body = ''
      req.on('data', (d: Buffer) => (body += d))
      req.on('end', () => {
        calls++
        if (calls === 1) {
          res.statusCode = 500
          return void res.end()
        }
        got.push({ headers: req.headers, body })
        res.end('ok')
      })
    })
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r))
    onTestFinished(() => new Promise<void>((r) => receiver.close(() => r())))
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`
    const { a } = await setup()
    await a.admin.post('/api/rollouts', canary({ steps: [{ weight: 10 }], notify: [{ url, secret: 's3cret', events: ['started', 'promoted'] }] }))
    expect((await rollout(a, 'c1')).spec.notify[0].secret).toBe('***')
    expect(JSON.stringify((await a.admin.get('/api/state')).body)).not.toContain('s3cret')
    await a.admin.post('/api/rollouts/c1/promote')
    const events = await eventually(() => {
      expect(got.map((g) => JSON.parse(g.body).event).sort()).toEqual(['promoted', 'started'])
      return got
    }, { timeoutMs: 10_000 })
    expect(calls).toBe(3) // the first attempt answered 500 and was retried
    expect(await (await fetch(a.app.adminUrl + '/metrics')).text()).toContain('switchyard_rollout_webhooks_total{result="sent"} 2')
    for (const e of events) {
      const timestamp = String(e.headers['x-switchyard-timestamp'])
      const expected = 'sha256=' + createHmac('sha256', 's3cret').update(`${timestamp}.${e.body}`).digest('hex')
      expect(e.headers['x-switchyard-signature']).toBe(expected)
      expect(JSON.parse(e.body)).toMatchObject({ rollout: 'c1', route: 'api', from: 'v1', to: 'v2' })
    }
    expect(JSON.parse(events.find((e) => JSON.parse(e.body).event === 'promoted')!.body)).toMatchObject({ phase: 'promoted', weight: 100 })
  })
})
