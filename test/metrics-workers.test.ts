/**
 * `/metrics` with `--workers`: whichever worker answers, counters are the group's sums, gauges
 * carry a `worker` label, and a worker that dies or is replaced never makes a sum go backwards.
 * Real processes (the CLI with node:cluster), real sockets, real Redis.
 */
import { request } from 'undici'
import { describe, expect, it, onTestFinished } from 'vitest'
import { startBackend } from './helpers/backend.js'
import { eventually } from './helpers/eventually.js'
import type { Family } from '../src/metrics/exposition.js'
import { fromWire, GroupTotals, toWire } from '../src/metrics/group.js'
import { parseStrict, type Scrape } from './helpers/prom-text.js'
import { spawnProxy, type ProxyProcess } from './helpers/proxy-process.js'
import { startRedis } from './helpers/redis.js'

async function scrape(p: ProxyProcess): Promise<Scrape> {
  // A fresh connection each time: node:cluster hands connections to the workers in turn.
  const res = await request(`${p.adminUrl}/metrics`, { reset: true, headersTimeout: 10_000, bodyTimeout: 10_000 })
  expect(res.statusCode).toBe(200)
  return parseStrict(await res.body.text())
}

const requestsTotal = (m: Scrape) => m.samples.filter((s) => s.name === 'switchyard_requests_total').reduce((n, s) => n + s.value, 0)
const histogramCount = (m: Scrape) => m.samples.filter((s) => s.name === 'switchyard_request_duration_seconds_count').reduce((n, s) => n + s.value, 0)
const workersOf = (m: Scrape, name: string) => m.samples.filter((s) => s.name === name).map((s) => s.labels['worker'])

/** `n` requests through the proxy, each on its own connection, so both workers serve some. */
async function send(p: ProxyProcess, n: number): Promise<void> {
  for (let i = 0; i < n; i += 10) {
    await Promise.all(
      Array.from({ length: Math.min(10, n - i) }, async () => {
        const res = await request(`${p.url}/`, { reset: true })
        await res.body.dump()
        expect(res.statusCode).toBe(200)
      }),
    )
  }
}

async function pids(p: ProxyProcess): Promise<number[]> {
  const res = await request(`${p.adminUrl}/api/instances`, { reset: true, headersTimeout: 2_000, bodyTimeout: 2_000 })
  return ((await res.body.json()) as { instances: { pid: number }[] }).instances.map((i) => i.pid)
}

async function group(store?: Record<string, unknown>) {
  const b = await startBackend('w')
  onTestFinished(() => b.close())
  const p = await spawnProxy({ ...(store ? { store } : {}), upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] }, ['--workers', '2'])
  onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
  await eventually(async () => expect(new Set(await pids(p)).size).toBe(2))
  return p
}

/** Scrapes `times` times; every answer must show exactly `n` requests (and as many in the histogram). */
async function expectTotals(p: ProxyProcess, n: number, times = 6): Promise<Scrape[]> {
  const scrapes: Scrape[] = []
  for (let i = 0; i < times; i++) {
    const m = await scrape(p)
    expect([requestsTotal(m), histogramCount(m)]).toEqual([n, n])
    scrapes.push(m)
  }
  return scrapes
}

describe('/metrics with --workers 2', () => {
  it('memory store: any worker shows the group: counters summed, gauges per worker; a killed worker leaves its counts in the sums', { timeout: 60_000 }, async () => {
    const p = await group()
    const N = 300
    await send(p, N)
    const [m] = await expectTotals(p, N)
    // Gauges: one series per worker; counters: one series for the group.
    expect(workersOf(m!, 'switchyard_state_revision').sort()).toEqual(['1', '2'])
    expect(workersOf(m!, 'switchyard_build_info').sort()).toEqual(['1', '2'])
    expect(workersOf(m!, 'process_resident_memory_bytes').sort()).toEqual(['1', '2'])
    expect(workersOf(m!, 'switchyard_requests_total').every((w) => w === undefined)).toBe(true)
    expect(m!.samples.filter((s) => s.name === 'process_cpu_user_seconds_total')).toHaveLength(1)

    // SIGKILL one worker: its replacement starts from zero, the group's sums do not move back.
    const [victim] = await pids(p)
    process.kill(victim!, 'SIGKILL')
    await eventually(
      async () => {
        const now = await pids(p)
        expect(now).toHaveLength(2)
        expect(now).not.toContain(victim)
        const m = await scrape(p)
        expect(workersOf(m, 'switchyard_state_revision').sort()).toEqual(['1', '2'])
      },
      { timeoutMs: 25_000, intervalMs: 200 },
    )
    await expectTotals(p, N)
    await send(p, 100)
    await expectTotals(p, N + 100)
  })

  it('SIGHUP replaces the workers: each leaves its final counts, the sums stay exact', { timeout: 60_000 }, async () => {
    const p = await group()
    await send(p, 200)
    await expectTotals(p, 200, 2)
    await send(p, 50) // not scraped before the reload: only the retiring workers' final counts carry them
    p.child.kill('SIGHUP')
    await eventually(() => expect(p.stdout()).toContain('reload done'), { timeoutMs: 25_000, intervalMs: 50 })
    await expectTotals(p, 250)
  })

  it('Redis store: the workers are separate instances of one process group, with the same sums', { timeout: 60_000 }, async () => {
    const redis = await startRedis()
    onTestFinished(() => redis.stop())
    const p = await group({ type: 'redis', url: redis.url, prefix: 'metrics-workers' })
    await send(p, 200)
    const [m] = await expectTotals(p, 200)
    expect(workersOf(m!, 'switchyard_store_connected').sort()).toEqual(['1', '2'])
  })

  it('every metric a dashboard or alert needs is there, with its labels (gauges also carry `worker`)', { timeout: 60_000 }, async () => {
    const redis = await startRedis()
    onTestFinished(() => redis.stop())
    const v2 = await startBackend('v2')
    onTestFinished(() => v2.close())
    const p = await group({ type: 'redis', url: redis.url, prefix: 'metrics-names' })
    const put = await request(`${p.adminUrl}/api/upstreams/v2`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ targets: [{ url: v2.url }] }) })
    expect(put.statusCode).toBeLessThan(300)
    await put.body.dump()
    const started = await request(`${p.adminUrl}/api/rollouts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'c1', route: 'r', from: 'v1', to: 'v2', steps: [{ weight: 10, pauseMs: 60_000 }] }),
    })
    expect(started.statusCode).toBe(201)
    await started.body.dump()
    await send(p, 100)
    const expected: [string, string, string[], boolean][] = [
      // name, type, labels, is a per-worker gauge
      ['switchyard_requests_total', 'counter', ['code_class', 'route', 'upstream'], false],
      ['switchyard_request_duration_seconds_bucket', 'histogram', ['le', 'route', 'upstream'], false],
      ['switchyard_request_duration_seconds_count', 'histogram', ['route', 'upstream'], false],
      ['switchyard_retries_total', 'counter', ['upstream'], false],
      ['switchyard_upstream_inflight', 'gauge', ['target', 'upstream'], true],
      ['switchyard_target_healthy', 'gauge', ['target', 'upstream'], true],
      ['switchyard_target_state', 'gauge', ['state', 'target', 'upstream'], true],
      ['switchyard_state_revision', 'gauge', [], true],
      ['switchyard_store_connected', 'gauge', [], true],
      ['switchyard_rollout_weight', 'gauge', ['rollout', 'upstream'], true],
      ['switchyard_build_info', 'gauge', ['node', 'version'], true],
      ['process_cpu_seconds_total', 'counter', [], false],
      ['nodejs_eventloop_lag_seconds', 'gauge', [], true],
    ]
    await eventually(async () => {
      const m = await scrape(p)
      expect(requestsTotal(m)).toBe(100)
      for (const [name, type, labels, perWorker] of expected) {
        expect([name, m.types.get(name.replace(/_(bucket|sum|count)$/, ''))]).toEqual([name, type])
        const found = m.samples.filter((s) => s.name === name)
        expect([name, found.length > 0]).toEqual([name, true])
        for (const x of found) expect([name, Object.keys(x.labels).sort()]).toEqual([name, (perWorker ? [...labels, 'worker'] : labels).sort()])
      }
      const weights = m.samples.filter((s) => s.name === 'switchyard_rollout_weight' && s.labels['upstream'] === 'v2')
      expect(weights.map((s) => s.value)).toEqual([10, 10])
    }, { timeoutMs: 10_000, intervalMs: 200 })
  })
})

describe('GroupTotals', () => {
  const counter = (name: string, samples: [Record<string, string>, number][]): Family => ({ name, help: 'h', type: 'counter', samples: samples.map(([labels, value]) => ({ name, labels, value })) })
  const gauge = (name: string, value: number): Family => ({ name, help: 'h', type: 'gauge', samples: [{ name, labels: {}, value }] })
  const valueOf = (fs: Family[], name: string, labels: Record<string, string> = {}) =>
    fs.find((f) => f.name === name)?.samples.find((s) => JSON.stringify(s.labels) === JSON.stringify(labels))?.value

  it("sums counters, labels gauges, keeps a dead worker's counts while its series live, drops them once its route is gone", () => {
    const g = new GroupTotals()
    const w1 = [counter('switchyard_requests_total', [[{ route: 'a' }, 5], [{ route: 'b' }, 1]]), counter('process_cpu_seconds_total', [[{}, 2]]), gauge('switchyard_state_revision', 3)]
    const w2 = [counter('switchyard_requests_total', [[{ route: 'a' }, 7], [{ route: 'b' }, 2]]), counter('process_cpu_seconds_total', [[{}, 1]]), gauge('switchyard_state_revision', 4)]
    let merged = g.merge([{ worker: '1', families: w1 }, { worker: '2', families: w2 }])
    expect(valueOf(merged, 'switchyard_requests_total', { route: 'a' })).toBe(12)
    expect(valueOf(merged, 'switchyard_state_revision', { worker: '1' })).toBe(3)
    expect(valueOf(merged, 'switchyard_state_revision', { worker: '2' })).toBe(4)
    g.retire(w1) // worker 1 died; its replacement starts from zero
    const fresh = [counter('switchyard_requests_total', [[{ route: 'a' }, 0], [{ route: 'b' }, 0]]), counter('process_cpu_seconds_total', [[{}, 0.1]]), gauge('switchyard_state_revision', 4)]
    merged = g.merge([{ worker: '1', families: fresh }, { worker: '2', families: w2 }])
    expect(valueOf(merged, 'switchyard_requests_total', { route: 'a' })).toBe(12)
    expect(valueOf(merged, 'switchyard_requests_total', { route: 'b' })).toBe(3)
    expect(valueOf(merged, 'process_cpu_seconds_total')).toBeCloseTo(3.1, 9)
    // Route b deleted: no live worker reports it, so the dead worker's count goes with it, for good.
    const noB = (fs: Family[]) => fs.map((f) => ({ ...f, samples: f.samples.filter((s) => s.labels['route'] !== 'b') }))
    merged = g.merge([{ worker: '1', families: noB(fresh) }, { worker: '2', families: noB(w2) }])
    expect(valueOf(merged, 'switchyard_requests_total', { route: 'b' })).toBeUndefined()
    merged = g.merge([{ worker: '1', families: fresh }, { worker: '2', families: [counter('switchyard_requests_total', [[{ route: 'a' }, 7], [{ route: 'b' }, 0]])] }])
    expect(valueOf(merged, 'switchyard_requests_total', { route: 'b' })).toBe(0) // re-created: from zero
    expect(valueOf(merged, 'switchyard_requests_total', { route: 'a' })).toBe(12)
  })

  it('NaN and infinities survive the JSON of the IPC channel', () => {
    const fs: Family[] = [{ name: 'g', help: 'h', type: 'gauge', samples: [NaN, Infinity, -Infinity, 1.5].map((value) => ({ name: 'g', labels: {}, value })) }]
    const back = fromWire(JSON.parse(JSON.stringify(toWire(fs))))
    expect(back[0]!.samples.map((s) => s.value)).toEqual([NaN, Infinity, -Infinity, 1.5])
  })
})
