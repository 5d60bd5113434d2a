/**
 * Outlier detection: consecutive 5xx and gateway failures eject a target for a while, never
 * more than maxEjectionPercent of an upstream at once; the ejection shows in the admin API,
 * the metrics and the log. End to end on real sockets; the counting rules and the ejection
 * time arithmetic on a compiled table, without sockets.
 */
import diagnostics from 'node:diagnostics_channel'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { OutlierDetection, State } from '../src/config/schema.js'
import { TARGET_EJECTED, type TargetEjectedEvent } from '../src/dataplane/events.js'
import { ejectionMs, nextEjectionLevel, outlierPolicy, recordFault, recordResponse, release } from '../src/dataplane/outlier.js'
import { Resources } from '../src/dataplane/resources.js'
import { compileTable } from '../src/dataplane/table.js'
import { startApp, type TestApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { memoryLogger } from './helpers/log.js'
import { statusBackend, type StatusBackend } from './helpers/status-backend.js'

/** One sample of the Prometheus text, or undefined when the series is absent. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(',')
  for (const line of text.split('\n')) {
    const m = /^(\w+)\{(.*)\} (\S+)$/.exec(line)
    if (m?.[1] === name && m[2]!.split(',').sort().join(',') === want) return Number(m[3])
  }
  return undefined
}

function oneUpstream(targets: StatusBackend[], outlierDetection?: OutlierDetection) {
  return {
    upstreams: { v1: { targets: targets.map((t) => ({ url: t.url })), ...(outlierDetection ? { outlierDetection } : {}) } },
    routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 1 } }],
  }
}

/** Sends GETs one after another until `done()` or `max` requests; returns the answers. */
async function until(app: TestApp, done: () => boolean, max: number) {
  const answers: { status: number; backend: string | null }[] = []
  for (let i = 0; i < max && !done(); i++) answers.push(await app.proxy('/x'))
  return answers
}

describe('end to end', () => {
  it('ejects a target after 5 consecutive 5xx, shows it in the API, metrics and log, and brings it back after its ejection time', async () => {
    const good = await statusBackend('good')
    const bad = await statusBackend('bad', 500)
    const log = memoryLogger()
    const app = await startApp(oneUpstream([good, bad], { baseEjectionMs: 1_000 }), { logger: log.logger })
    const rt = () => app.app.dataplane.resources.targets.get(`v1/${bad.id}`)!

    await until(app, () => rt().ejected, 40)
    expect(rt().ejected).toBe(true)
    // Ejected by the answer that made 5 in a row (default consecutive5xx), not before.
    expect(bad.served).toBe(5)

    const view = await app.admin.get(`/api/upstreams/v1/targets/${bad.id}`)
    expect(view.status).toBe(200)
    expect(view.body).toMatchObject({ id: bad.id, state: 'active', healthy: false, reason: 'ejected: 5 consecutive 5xx' })
    const until_ = Date.parse(view.body.until)
    expect(until_).toBeGreaterThan(Date.now())
    expect(until_).toBeLessThanOrEqual(Date.now() + 1_000)
    const goodView = await app.admin.get(`/api/upstreams/v1/targets/${good.id}`)
    expect(goodView.body.healthy).toBe(true)
    expect(goodView.body).not.toHaveProperty('reason')
    expect(goodView.body).not.toHaveProperty('until')

    const metrics = (await fetch(`${app.app.adminUrl}/metrics`).then((r) => r.text())) as string
    const labels = { upstream: 'v1', target: bad.id }
    expect(sample(metrics, 'switchyard_target_ejected', labels)).toBe(1)
    expect(sample(metrics, 'switchyard_target_healthy', labels)).toBe(0)
    expect(sample(metrics, 'switchyard_ejections_total', { ...labels, reason: 'consecutive_5xx' })).toBe(1)
    expect(sample(metrics, 'switchyard_ejections_total', { ...labels, reason: 'consecutive_gateway_failure' })).toBe(0)
    expect(sample(metrics, 'switchyard_target_ejected', { upstream: 'v1', target: good.id })).toBe(0)

    const [line] = log.find('ejected')
    expect(line).toMatchObject({ level: 'warn', upstream: 'v1', target: bad.id, reason: 'consecutive_5xx', consecutive: 5, ejectionMs: 1_000 })

    // While out, it gets nothing: every request lands on the good target.
    let whileOut = 0
    for (let i = 0; i < 10; i++) {
      const before = rt().ejected
      const a = await app.proxy('/x')
      if (!before || !rt().ejected) continue
      whileOut++
      expect(a).toMatchObject({ status: 200, backend: 'good' })
    }
    expect(whileOut).toBeGreaterThan(0)

    // It comes back by itself once the ejection time ran out, and gets requests again.
    bad.status = 200
    await eventually(async () => expect((await app.admin.get(`/api/upstreams/v1/targets/${bad.id}`)).body.healthy).toBe(true), { timeoutMs: 3000 })
    expect(Date.now()).toBeGreaterThanOrEqual(until_ - 5)
    expect(log.find('back after its ejection')[0]).toMatchObject({ level: 'info', upstream: 'v1', target: bad.id })
    const after = await until(app, () => false, 10)
    expect(after.some((a) => a.backend === 'bad')).toBe(true)
  })

  it('never ejects more than maxEjectionPercent of the targets, even when every target fails', async () => {
    const targets = await Promise.all(['a', 'b', 'c', 'd'].map((n) => statusBackend(n, 503)))
    const app = await startApp(oneUpstream(targets, { consecutive5xx: 3, consecutiveGatewayFailure: 3, baseEjectionMs: 60_000 }))
    const ejected = () => targets.filter((t) => app.app.dataplane.resources.targets.get(`v1/${t.id}`)!.ejected).length
    const answers = await until(app, () => false, 60)
    // Half of four (the default 50 %): two out, two left serving, whose own answers pass through.
    expect(ejected()).toBe(2)
    expect(answers.every((a) => a.status === 503 && a.backend !== null)).toBe(true)
    const metrics = await fetch(`${app.app.adminUrl}/metrics`).then((r) => r.text())
    const out = targets.map((t) => sample(metrics, 'switchyard_target_ejected', { upstream: 'v1', target: t.id }))
    expect(out.reduce((a, b) => a! + b!, 0)).toBe(2)
  })

  it('does not eject the only target at the default 50 %; at 100 % it does', async () => {
    const only = await statusBackend('only', 500)
    const app = await startApp(oneUpstream([only], { consecutive5xx: 2, baseEjectionMs: 60_000 }))
    const answers = await until(app, () => false, 10)
    expect(answers.every((a) => a.status === 500 && a.backend === 'only')).toBe(true)
    expect(app.app.dataplane.resources.targets.get(`v1/${only.id}`)!.ejected).toBe(false)

    const res = await app.admin.put('/api/upstreams/v1', { targets: [{ url: only.url }], outlierDetection: { consecutive5xx: 2, maxEjectionPercent: 100, baseEjectionMs: 60_000 } })
    expect(res.status).toBe(200)
    const after = await until(app, () => false, 4)
    expect(after.map((a) => a.status)).toEqual([500, 500, 503, 503])
  })

  it("counts the proxy's own gateway failures: headers timeouts (504) eject after consecutiveGatewayFailure", async () => {
    const fast = await statusBackend('fast')
    const slow = await statusBackend('slow')
    // undici checks headersTimeout on a coarse timer (~0.5 s ticks): answer far later than that.
    slow.delayMs = 5_000
    const config = oneUpstream([fast, slow], { consecutive5xx: 0, consecutiveGatewayFailure: 2, baseEjectionMs: 60_000 })
    const app = await startApp({ ...config, upstreams: { v1: { ...config.upstreams.v1, headersTimeoutMs: 100 } } })
    const rt = () => app.app.dataplane.resources.targets.get(`v1/${slow.id}`)!
    const answers = await until(app, () => rt().ejected, 20)
    expect(rt().ejected).toBe(true)
    expect(answers.filter((a) => a.status === 504)).toHaveLength(2)
    const view = await app.admin.get(`/api/upstreams/v1/targets/${slow.id}`)
    expect(view.body).toMatchObject({ healthy: false, reason: 'ejected: 2 consecutive gateway failures' })
  })

  it('is off without outlierDetection: a target answering only 500 keeps getting requests', async () => {
    const good = await statusBackend('good')
    const bad = await statusBackend('bad', 500)
    const app = await startApp(oneUpstream([good, bad]))
    await until(app, () => false, 30)
    expect(bad.served).toBeGreaterThanOrEqual(10)
    expect(app.app.dataplane.resources.targets.get(`v1/${bad.id}`)!.ejected).toBe(false)
  })
})

describe('counting and ejection time (compiled table, no sockets)', () => {
  function setup(outlierDetection: OutlierDetection | undefined, targets = 2) {
    const res = new Resources()
    onTestFinished(() => res.close())
    const state: State = {
      revision: 1,
      upstreams: {
        v1: {
          targets: Array.from({ length: targets }, (_, i) => ({ url: `http://127.0.0.1:${4001 + i}`, id: `t${i}`, state: 'active' as const })),
          ...(outlierDetection ? { outlierDetection } : {}),
        },
      },
      routes: [{ name: 'api', split: { v1: 1 } }],
      flags: {},
      rollouts: {},
    }
    const u = compileTable(state, res).upstreams.get('v1')!
    return { res, u, rt: u.targets[0]!.rt }
  }

  it.each([
    { name: '5 × 500 ejects (consecutive_5xx)', seq: [500, 500, 500, 500, 500], ejected: true },
    { name: 'a success in between resets the run', seq: [500, 500, 500, 500, 200, 500, 500, 500, 500], ejected: false },
    { name: 'a 4xx is a success for outlier detection', seq: [500, 500, 404, 500, 500, 500], ejected: false },
    { name: '5 gateway answers (502/503/504) eject', seq: [502, 503, 504, 502, 503], ejected: true },
    { name: '500s and 502s mixed still make 5 × 5xx', seq: [500, 502, 500, 502, 500], ejected: true },
  ])('$name', ({ seq, ejected }) => {
    const { u, rt } = setup({ baseEjectionMs: 60_000 })
    for (const status of seq) recordResponse(u, rt, status)
    expect(rt.ejected).toBe(ejected)
    expect(rt.available).toBe(!ejected)
  })

  it('a 500 resets the gateway-failure run but not the 5xx run', () => {
    const { u, rt } = setup({ consecutive5xx: 10, consecutiveGatewayFailure: 3, baseEjectionMs: 60_000 })
    for (const status of [502, 502, 500, 502, 502]) recordResponse(u, rt, status)
    expect(rt.ejected).toBe(false)
    expect(rt.consecutive5xx).toBe(5)
    recordResponse(u, rt, 504)
    expect(rt.ejected).toBe(true)
    expect(rt.ejections).toEqual({ consecutive_5xx: 0, consecutive_gateway_failure: 1 })
  })

  it('connect failures, resets and timeouts count as gateway failures; a pool closed by a swap does not', () => {
    const { u, rt } = setup({ consecutiveGatewayFailure: 3, baseEjectionMs: 60_000 })
    recordFault(u, rt, 'pool-gone')
    recordFault(u, rt, 'other')
    expect(rt.consecutiveGateway).toBe(0)
    recordFault(u, rt, 'connect')
    recordFault(u, rt, 'reset')
    recordFault(u, rt, 'headers-timeout')
    expect(rt.ejected).toBe(true)
  })

  it('publishes the ejection with its time; a second ejection in a row lasts twice as long', () => {
    const { u, rt } = setup({ consecutive5xx: 2, baseEjectionMs: 1_000, maxEjectionPercent: 100 })
    const events: TargetEjectedEvent[] = []
    const listen = (m: unknown) => events.push(m as TargetEjectedEvent)
    diagnostics.subscribe(TARGET_EJECTED, listen)
    onTestFinished(() => void diagnostics.unsubscribe(TARGET_EJECTED, listen))
    recordResponse(u, rt, 500)
    recordResponse(u, rt, 500)
    release(rt)
    expect(rt.rampStart).toBeGreaterThanOrEqual(0)
    recordResponse(u, rt, 500)
    recordResponse(u, rt, 500)
    expect(events.map((e) => [e.target, e.reason, e.durationMs, e.level])).toEqual([
      ['t0', 'consecutive_5xx', 1_000, 1],
      ['t0', 'consecutive_5xx', 2_000, 2],
    ])
    expect(rt.ejectedUntil - rt.ejectedSince).toBe(2_000)
  })

  it.each([
    { level: 0, since: 0, next: 1 },
    { level: 1, since: 500, next: 2 },
    { level: 3, since: 1_000, next: 3 }, // one base time in: one step down, then +1
    { level: 3, since: 10_000, next: 1 }, // long good behaviour: back to the base time
    { level: 10, since: 0, next: 10 }, // never past the cap (10 × 1 s = maxEjectionMs)
  ])('ejection level $level, $since ms after the last return → $next', ({ level, since, next }) => {
    const p = outlierPolicy({ baseEjectionMs: 1_000, maxEjectionMs: 10_000 })!
    expect(nextEjectionLevel(level, since, p)).toBe(next)
  })

  it('caps an ejection at maxEjectionMs, and never below baseEjectionMs', () => {
    expect(ejectionMs(50, outlierPolicy({ baseEjectionMs: 1_000, maxEjectionMs: 5_000 })!)).toBe(5_000)
    expect(ejectionMs(1, outlierPolicy({ baseEjectionMs: 8_000, maxEjectionMs: 5_000 })!)).toBe(8_000)
    expect(outlierPolicy({})).toMatchObject({ consecutive5xx: 5, consecutiveGatewayFailure: 5, baseEjectionMs: 30_000, maxEjectionMs: 300_000, maxEjectionPercent: 50 })
    expect(outlierPolicy(undefined)).toBeNull()
  })

  it('removing outlierDetection from the upstream brings an ejected target back at once', () => {
    const { res, u, rt } = setup({ consecutive5xx: 1, baseEjectionMs: 60_000 })
    recordResponse(u, rt, 500)
    expect(rt.ejected).toBe(true)
    compileTable(
      { revision: 2, upstreams: { v1: { targets: u.targets.map((t) => ({ url: t.url, id: t.id, state: 'active' })) } }, routes: [{ name: 'api', split: { v1: 1 } }], flags: {}, rollouts: {} },
      res,
    )
    expect(rt.ejected).toBe(false)
    expect(rt.available).toBe(true)
  })
})
