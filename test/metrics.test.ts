/**
 * GET /metrics: the counters the data plane keeps, read at scrape time, in the
 * Prometheus text format. Real sockets for the end-to-end cases; the histogram arithmetic and
 * label escaping are checked on a bare `Metrics` over hand-filled counters.
 */
import { describe, expect, it, onTestFinished } from 'vitest'
import type { State } from '../src/config/schema.js'
import { Resources } from '../src/dataplane/resources.js'
import { LATENCY_BOUNDS_MS } from '../src/dataplane/stats.js'
import { Metrics } from '../src/metrics/metrics.js'
import { adminClient, backend, startApp, type TestApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { startRedis } from './helpers/redis.js'

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

interface Scrape {
  text: string
  samples: Sample[]
  /** `# TYPE` per metric name */
  types: Map<string, string>
}

/** Parses the text format strictly: every line is a comment or `name{labels} value`. */
function parse(text: string): Scrape {
  const samples: Sample[] = []
  const types = new Map<string, string>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ')) continue
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type) {
      expect(types.has(type[1]!), `TYPE twice for ${type[1]}`).toBe(false)
      types.set(type[1]!, type[2]!)
      continue
    }
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))
    }
    samples.push({ name: m[1]!, labels, value: m[3] === '+Inf' ? Infinity : Number(m[3]) })
  }
  return { text, samples, types }
}

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
  expect(buckets).toHaveLength(18)
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
      switchyard_process_cpu_user_seconds_total: 'counter',
    })
    expect(series(m, 'switchyard_rollout_weight')).toEqual([]) // no rollouts yet: declared, no samples
    expect(value(m, 'switchyard_process_cpu_user_seconds_total')).toBeGreaterThan(0)

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
    expect(slowH.buckets[0]![0]).toBeCloseTo(0.00116, 5) // ~1 ms ...
    expect(slowH.buckets.at(-2)![0]).toBeCloseTo(52.2, 1) // ... to ~60 s, then +Inf

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

  it('histogram buckets are exact sums of our buckets at their bounds; label values are escaped', async () => {
    const resources = new Resources()
    const route = 'we"ird\\route\nname'
    const s = resources.stats(route, 'v1')
    const b = (i: number) => LATENCY_BOUNDS_MS[i]!
    s.record(200, 0.5) // ≤ 1.16 ms (i = 11)
    s.record(204, b(14)) // exactly on the bound of le #2: counted in it (bounds are inclusive)
    s.record(200, b(14) * 1.001) // just above it: only from le #3 (i = 17) on
    s.record(0, 3) // the client went away: class none
    s.record(500, 100_000) // 100 s: past the last finite bound (52.2 s), only in +Inf
    resources.target('v1', 'a"b', false).inflight = 2
    resources.target('v1', 'removed', true).inflight = 1 // finishing after its removal: not reported
    const state: State = {
      revision: 7,
      upstreams: { v1: { targets: [{ id: 'a"b', url: 'http://127.0.0.1:1', state: 'draining' }] } },
      routes: [],
      flags: {},
      rollouts: {},
    }
    const follower = { behindMs: () => 2_500, applyFailures: 1, behindAlerts: 3, effective: state }
    const metrics = new Metrics({ dataplane: { resources }, control: { state, store: { connected: false }, follower } })
    // A second instance in the same process does not clash with the first ("already registered").
    const other = new Metrics({ dataplane: { resources: new Resources() }, control: { state, store: { connected: true }, follower } })
    const m = parse(await metrics.render())
    expect(value(parse(await other.render()), 'switchyard_store_connected')).toBe(1)
    expect(value(m, 'switchyard_state_behind_seconds')).toBe(2.5)
    expect(value(m, 'switchyard_state_apply_failures_total')).toBe(1)
    expect(value(m, 'switchyard_state_behind_alerts_total')).toBe(3)

    expect(m.text).toContain('route="we\\"ird\\\\route\\nname"')
    const h = histogram(m, route, 'v1')
    expect(h.buckets.map(([, n]) => n)).toEqual([1, 2, ...Array<number>(15).fill(4), 5])
    expect(h.buckets.slice(0, 3).map(([le]) => le)).toEqual([b(11) / 1000, b(14) / 1000, b(17) / 1000])
    expect(h.count).toBe(5)
    expect(h.sum).toBeCloseTo((0.5 + b(14) * 2.001 + 3 + 100_000) / 1000, 9)
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
