/**
 * GET /metrics: the counters the data plane keeps, read at scrape time, in the
 * Prometheus text format. Real sockets for the end-to-end cases; the histogram arithmetic and
 * label escaping are checked on a bare `Metrics` over hand-filled counters.
 */
import { describe, expect, it, onTestFinished } from 'vitest'
import type { State } from '../src/config/schema.js'
import { Resources } from '../src/dataplane/resources.js'
import { LATENCY_BOUNDS_MS } from '../src/dataplane/stats.js'
import { DURATION_LE_MS, Metrics } from '../src/metrics/metrics.js'
import { adminClient, backend, startApp, type TestApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { parseStrict, type Scrape } from './helpers/prom-text.js'
import { startRedis } from './helpers/redis.js'

/** Every scrape goes through the strict reader: one invalid line fails a Prometheus scrape. */
const parse = parseStrict

const same = (a: Record<string, string>, b: Record<string, string>) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(b).every(([k, v]) => a[k] === v)

/** The value of the one sample named `name` with exactly `labels`. */
function value(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  const found = s.samples.filter((x) => x.name === name && same(x.labels, labels))
  expect(found, `${name}${JSON.stringify(labels)}`).toHaveLength(1)
  return found[0]!.value
}

const series = (s: Scrape, name: string, where: Record<string, string> = {}) =>
  s.samples.filter((x) => x.name === name && Object.entries(where).every(([k, v]) => x.labels[k] === v))

/** Checks one (route, upstream) histogram; returns its cumulative buckets `[le, count]`. */
function histogram(s: Scrape, route: string, upstream: string): { buckets: [number, number][]; count: number; sum: number } {
  const name = 'switchyard_request_duration_seconds'
  const buckets = series(s, `${name}_bucket`, { route, upstream }).map((x): [number, number] => [x.labels['le'] === '+Inf' ? Infinity : Number(x.labels['le']), x.value])
  expect(buckets).toHaveLength(16)
  for (let i = 1; i < buckets.length; i++) {
    expect(buckets[i]![0]).toBeGreaterThan(buckets[i - 1]![0])
    expect(buckets[i]![1]).toBeGreaterThanOrEqual(buckets[i - 1]![1])
  }
  const count = value(s, `${name}_count`, { route, upstream })
  expect(buckets.at(-1)).toEqual([Infinity, count])
  return { buckets, count, sum: value(s, `${name}_sum`, { route, upstream }) }
}

async function scrape(adminUrl: string): Promise<Scrape> {
  const res = await fetch(`${adminUrl}/metrics`)
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8')
  return parse(await res.text())
}

const CLASSES = ['none', '1xx', '2xx', '3xx', '4xx', '5xx']

describe('GET /metrics', () => {
  it('counts requests by class, proxy errors and no-route; reports targets and the state; needs no token', async () => {
    const b1 = await backend('b1')
    const b2 = await backend('b2')
    const t: TestApp = await startApp(
      {
        admin: { token: 'secret' },
        upstreams: {
          v1: { targets: [{ url: b1.url }, { url: b2.url, state: 'draining' }] },
          v2: { targets: [{ url: b2.url, state: 'disabled' }] },
        },
        routes: [
          { name: 'api', match: { pathPrefix: '/status' }, split: { v1: 100 } },
          { name: 'slow', match: { pathPrefix: '/delay' }, split: { v1: 100 } },
          { name: 'dark', match: { pathPrefix: '/dark' }, split: { v2: 100 } },
        ],
      },
      { token: 'secret' },
    )
    expect((await adminClient(t.app.adminUrl).get('/api/state')).status).toBe(401) // the token is enforced on /api/*

    for (let i = 0; i < 3; i++) expect((await t.proxy('/status')).status).toBe(200)
    expect((await t.proxy('/status?code=500')).status).toBe(500)
    expect((await t.proxy('/nothing')).status).toBe(404)
    expect((await t.proxy('/dark')).status).toBe(503)
    // A request held for 400 ms shows as in flight on the target that serves it.
    const slow = t.proxy('/delay?ms=400')
    await eventually(async () => expect(value(await scrape(t.app.adminUrl), 'switchyard_upstream_inflight', { upstream: 'v1', target: b1.id })).toBe(1))
    expect((await slow).status).toBe(200)

    const m = await scrape(t.app.adminUrl)
    const types = Object.fromEntries(m.types)
    expect(types).toMatchObject({
      switchyard_requests_total: 'counter',
      switchyard_request_duration_seconds: 'histogram',
      switchyard_proxy_errors_total: 'counter',
      switchyard_no_route_total: 'counter',
      switchyard_retries_total: 'counter',
      switchyard_upstream_inflight: 'gauge',
      switchyard_target_healthy: 'gauge',
      switchyard_target_state: 'gauge',
      switchyard_state_revision: 'gauge',
      switchyard_store_connected: 'gauge',
      switchyard_rollout_weight: 'gauge',
      switchyard_build_info: 'gauge',
      process_cpu_user_seconds_total: 'counter',
      nodejs_eventloop_lag_mean_seconds: 'gauge',
    })
    expect(series(m, 'switchyard_rollout_weight')).toEqual([]) // no rollouts yet: declared, no samples
    expect(value(m, 'process_cpu_user_seconds_total')).toBeGreaterThan(0)
    // Node's default metrics under their standard names only.
    expect([...m.types.keys()].filter((n) => n.startsWith('switchyard_process_') || n.startsWith('switchyard_nodejs_'))).toEqual([])
    expect(series(m, 'switchyard_build_info')).toEqual([{ name: 'switchyard_build_info', labels: { version: '0.1.0', node: process.versions.node }, value: 1 }])

    const requests = (route: string, upstream: string) =>
      Object.fromEntries(CLASSES.map((c) => [c, value(m, 'switchyard_requests_total', { route, upstream, code_class: c })]))
    expect(requests('api', 'v1')).toEqual({ none: 0, '1xx': 0, '2xx': 3, '3xx': 0, '4xx': 0, '5xx': 1 })
    expect(requests('slow', 'v1')).toEqual({ none: 0, '1xx': 0, '2xx': 1, '3xx': 0, '4xx': 0, '5xx': 0 })
    expect(requests('dark', 'v2')).toEqual({ none: 0, '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 1 })
    expect(series(m, 'switchyard_requests_total')).toHaveLength(3 * CLASSES.length)
    expect(value(m, 'switchyard_proxy_errors_total', { route: 'dark', upstream: 'v2', code: 'NO_HEALTHY_TARGET' })).toBe(1)
    expect(series(m, 'switchyard_proxy_errors_total').reduce((n, x) => n + x.value, 0)).toBe(1) // the 500 was the backend's
    expect(value(m, 'switchyard_no_route_total')).toBe(1)
    expect(value(m, 'switchyard_retries_total', { upstream: 'v1' })).toBe(0)
    expect(value(m, 'switchyard_retries_total', { upstream: 'v2' })).toBe(0)

    for (const [route, upstream, n] of [['api', 'v1', 4], ['slow', 'v1', 1], ['dark', 'v2', 1]] as const) {
      const h = histogram(m, route, upstream)
      expect(h.count).toBe(n)
      expect(h.sum).toBeGreaterThan(0)
    }
    const slowH = histogram(m, 'slow', 'v1')
    expect(slowH.sum).toBeGreaterThanOrEqual(0.4)
    expect(slowH.buckets.filter(([le]) => le < 0.4).every(([, n]) => n === 0)).toBe(true)
    // Round bounds, 1 ms to 60 s, then +Inf.
    expect(slowH.buckets.map(([le]) => le)).toEqual([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, Infinity])

    for (const [upstream, target] of [['v1', b1.id], ['v1', b2.id], ['v2', b2.id]] as const) {
      expect(value(m, 'switchyard_upstream_inflight', { upstream, target })).toBe(0)
      expect(value(m, 'switchyard_target_healthy', { upstream, target })).toBe(1)
    }
    const stateOf = (upstream: string, target: string) =>
      Object.fromEntries(series(m, 'switchyard_target_state', { upstream, target }).map((x) => [x.labels['state'], x.value]))
    expect(stateOf('v1', b1.id)).toEqual({ active: 1, draining: 0, disabled: 0 })
    expect(stateOf('v1', b2.id)).toEqual({ active: 0, draining: 1, disabled: 0 })
    expect(stateOf('v2', b2.id)).toEqual({ active: 0, draining: 0, disabled: 1 })
    expect(series(m, 'switchyard_target_state')).toHaveLength(9)

    expect(value(m, 'switchyard_state_revision')).toBe((await t.admin.get<State>('/api/state')).body.revision)
    expect(value(m, 'switchyard_store_connected')).toBe(1)

    // A removed target's series go; the revision follows the write.
    const del = await t.admin.del(`/api/upstreams/v1/targets/${b2.id}`)
    expect(del.status).toBe(200)
    const after = await scrape(t.app.adminUrl)
    expect(value(after, 'switchyard_state_revision')).toBe(del.body.revision)
    expect(value(after, 'switchyard_state_revision')).toBe((await t.admin.get<State>('/api/state')).body.revision)
    for (const name of ['switchyard_upstream_inflight', 'switchyard_target_healthy', 'switchyard_target_state']) {
      expect(series(after, name, { upstream: 'v1', target: b2.id })).toEqual([])
      expect(series(after, name, { upstream: 'v2', target: b2.id }).length).toBeGreaterThan(0)
    }
  })

  it('every metric of the documented list is there with exactly its labels, and every scrape is valid text', async () => {
    const v1 = await backend('v1')
    const v2 = await backend('v2')
    const t = await startApp({
      upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
      routes: [{ name: 'api', split: { v1: 100, v2: 0 } }],
    })
    expect((await t.admin.post('/api/rollouts', { id: 'c1', route: 'api', from: 'v1', to: 'v2', steps: [{ weight: 10, pauseMs: 60_000 }] })).status).toBe(201)
    for (let i = 0; i < 5; i++) await t.proxy('/')
    const m = await scrape(t.app.adminUrl)
    const expected: [string, string, string[]][] = [
      ['switchyard_requests_total', 'counter', ['code_class', 'route', 'upstream']],
      ['switchyard_request_duration_seconds_bucket', 'histogram', ['le', 'route', 'upstream']],
      ['switchyard_request_duration_seconds_sum', 'histogram', ['route', 'upstream']],
      ['switchyard_request_duration_seconds_count', 'histogram', ['route', 'upstream']],
      ['switchyard_upstream_inflight', 'gauge', ['target', 'upstream']],
      ['switchyard_target_healthy', 'gauge', ['target', 'upstream']],
      ['switchyard_target_state', 'gauge', ['state', 'target', 'upstream']],
      ['switchyard_retries_total', 'counter', ['upstream']],
      ['switchyard_state_revision', 'gauge', []],
      ['switchyard_store_connected', 'gauge', []],
      ['switchyard_rollout_weight', 'gauge', ['rollout', 'upstream']],
      ['switchyard_build_info', 'gauge', ['node', 'version']],
    ]
    for (const [name, type, labels] of expected) {
      const family = name.replace(/_(bucket|sum|count)$/, '')
      expect([name, m.types.get(family)]).toEqual([name, type])
      const found = series(m, name)
      expect([name, found.length > 0]).toEqual([name, true])
      for (const x of found) expect([name, Object.keys(x.labels).sort()]).toEqual([name, labels])
    }
    expect(value(m, 'switchyard_rollout_weight', { rollout: 'c1', upstream: 'v2' })).toBe(10)
    expect(value(m, 'switchyard_rollout_weight', { rollout: 'c1', upstream: 'v1' })).toBe(90)
    // Ten more scrapes in a row: each is valid text, whatever the event loop did in between.
    for (let i = 0; i < 10; i++) await scrape(t.app.adminUrl)
  })

  it('histogram buckets are exact sums of our buckets at their bounds; label values are escaped', async () => {
    const resources = new Resources()
    const route = 'we"ird\\route\nname'
    const s = resources.stats(route, 'v1')
    s.record(200, 0.5) // ≤ 1 ms
    s.record(204, 2.5) // exactly on the bound of le #2: counted in it (bounds are inclusive)
    s.record(200, 2.5 * 1.001) // just above it: only from le #3 (5 ms) on
    s.record(0, 3) // the client went away: class none
    s.record(500, 100_000) // 100 s: past the last finite bound (60 s), only in +Inf
    resources.target('v1', 'a"b', false).inflight = 2
    resources.target('v1', 'removed', true).inflight = 1 // finishing after its removal: not reported
    const state: State = {
      revision: 7,
      upstreams: { v1: { targets: [{ id: 'a"b', url: 'http://127.0.0.1:1', state: 'draining' }] } },
      routes: [],
      flags: {},
      rollouts: {},
    }
    const follower = { behindMs: () => 2_500, applyFailures: 1, behindAlerts: 3, divergences: 2, effective: state }
    const metrics = new Metrics({ dataplane: { resources }, control: { state, store: { connected: false }, follower } })
    // A second instance in the same process does not clash with the first ("already registered").
    const other = new Metrics({ dataplane: { resources: new Resources() }, control: { state, store: { connected: true }, follower } })
    const m = parse(await metrics.render())
    expect(value(parse(await other.render()), 'switchyard_store_connected')).toBe(1)
    expect(value(m, 'switchyard_state_behind_seconds')).toBe(2.5)
    expect(value(m, 'switchyard_state_apply_failures_total')).toBe(1)
    expect(value(m, 'switchyard_state_divergences_total')).toBe(2)
    expect(value(m, 'switchyard_state_behind_alerts_total')).toBe(3)

    expect(m.text).toContain('route="we\\"ird\\\\route\\nname"')
    const h = histogram(m, route, 'v1')
    expect(h.buckets.map(([, n]) => n)).toEqual([1, 2, ...Array<number>(13).fill(4), 5])
    expect(h.buckets.slice(0, 3).map(([le]) => le)).toEqual([0.001, 0.0025, 0.005])
    expect(h.count).toBe(5)
    expect(h.sum).toBeCloseTo((0.5 + 2.5 * 2.001 + 3 + 100_000) / 1000, 9)
    expect(Object.fromEntries(CLASSES.map((c) => [c, value(m, 'switchyard_requests_total', { route, upstream: 'v1', code_class: c })]))).toEqual({
      none: 1,
      '1xx': 0,
      '2xx': 3,
      '3xx': 0,
      '4xx': 0,
      '5xx': 1,
    })

    expect(value(m, 'switchyard_upstream_inflight', { upstream: 'v1', target: 'a"b' })).toBe(2)
    expect(value(m, 'switchyard_target_healthy', { upstream: 'v1', target: 'a"b' })).toBe(0)
    expect(value(m, 'switchyard_target_state', { upstream: 'v1', target: 'a"b', state: 'draining' })).toBe(1)
    expect(series(m, 'switchyard_upstream_inflight', { target: 'removed' })).toEqual([])
    expect(value(m, 'switchyard_state_revision')).toBe(7)
    expect(value(m, 'switchyard_store_connected')).toBe(0)
  })

  it('every round le is a bound of the fine histogram: a time on it counts under it, a time just above only in the next', async () => {
    expect(DURATION_LE_MS.every((ms) => LATENCY_BOUNDS_MS.includes(ms))).toBe(true)
    const state: State = { revision: 1, upstreams: {}, routes: [], flags: {}, rollouts: {} }
    const follower = { behindMs: () => 0, applyFailures: 0, behindAlerts: 0, divergences: 0, effective: state }
    for (const [k, ms] of DURATION_LE_MS.entries()) {
      const resources = new Resources()
      resources.stats('on', 'v1').record(200, ms)
      resources.stats('above', 'v1').record(200, ms * (1 + 1e-12))
      resources.stats('below', 'v1').record(200, ms * (1 - 1e-12))
      const m = parse(await new Metrics({ dataplane: { resources }, control: { state, store: { connected: true }, follower } }).render())
      const counts = (route: string) => histogram(m, route, 'v1').buckets.map(([, n]) => n)
      const from = (i: number) => Array.from({ length: 16 }, (_, j) => (j >= i ? 1 : 0))
      expect([ms, counts('below')]).toEqual([ms, from(k)])
      expect([ms, counts('on')]).toEqual([ms, from(k)])
      expect([ms, counts('above')]).toEqual([ms, from(k + 1)])
    }
  })

  it('event-loop figures never print Nan: back-to-back scrapes of two instances in one process are valid text', async () => {
    const state: State = { revision: 1, upstreams: {}, routes: [], flags: {}, rollouts: {} }
    const follower = { behindMs: () => 0, applyFailures: 0, behindAlerts: 0, divergences: 0, effective: state }
    const make = () => new Metrics({ dataplane: { resources: new Resources() }, control: { state, store: { connected: true }, follower } })
    const [a, b] = [make(), make()]
    const texts = await Promise.all([a.render(), b.render(), a.render(), b.render()])
    for (const text of texts) {
      expect(text).not.toMatch(/ Nan$/m)
      const m = parse(text)
      // mean and stddev: a number, or NaN (no sample yet) with every other lag statistic NaN too
      const mean = value(m, 'nodejs_eventloop_lag_mean_seconds')
      const min = value(m, 'nodejs_eventloop_lag_min_seconds')
      expect(Number.isNaN(mean) ? Number.isNaN(min) : min <= mean).toBe(true)
    }
  })

  it('the strict reader refuses what Prometheus refuses', () => {
    const ok = '# HELP a_total x\\n\\\\ y\n# TYPE a_total counter\na_total{l="q\\"\\\\\\n"} 1\n# TYPE g gauge\ng NaN\n'
    expect(parse(ok).samples).toHaveLength(2)
    for (const bad of [
      '# TYPE g gauge\ng Nan\n',
      '# TYPE g gauge\ng nan\n',
      '# TYPE g gauge\ng 1,5\n',
      '# TYPE g gauge\ng{l="a"} 1\ng{l="a"} 2\n',
      '# TYPE g gauge\ng{l="\\x"} 1\n',
      '# TYPE g gauge\ng{l=a} 1\n',
      '# TYPE g gauge\ng 1',
      '# TYPE c_total counter\nc_total -1\n',
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
      '# TYPE g gauge\ng 1\n# TYPE f gauge\nf 1\ng{x="1"} 1\n',
    ]) {
      expect(() => parse(bad), bad).toThrow()
    }
  })

  it('store_connected follows a Redis outage and recovery', async () => {
    const redis = await startRedis()
    onTestFinished(() => redis.stop())
    const b1 = await backend('b1')
    const t = await startApp({
      upstreams: { v1: { targets: [{ url: b1.url }] } },
      routes: [{ name: 'api', split: { v1: 100 } }],
      store: { type: 'redis', url: redis.url, prefix: 'metrics' },
    })
    expect(value(await scrape(t.app.adminUrl), 'switchyard_store_connected')).toBe(1)
    await redis.kill('SIGKILL')
    await eventually(async () => expect(value(await scrape(t.app.adminUrl), 'switchyard_store_connected')).toBe(0))
    expect((await t.proxy('/')).status).toBe(200) // still proxying on the applied state
    await redis.restart()
    await eventually(async () => expect(value(await scrape(t.app.adminUrl), 'switchyard_store_connected')).toBe(1))
  })
})
