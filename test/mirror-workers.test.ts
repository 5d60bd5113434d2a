/**
 * Mirroring with `--workers 2` (the CLI, node:cluster), memory and Redis stores: each worker
 * copies and compares its own requests; /metrics sums the workers' mirror counters, and
 * `GET /api/routes/{name}/mirror` sums their published figures, so both see every copy once.
 */
import { request } from 'undici'
import { describe, expect, it, onTestFinished } from 'vitest'
import { eventually } from './helpers/eventually.js'
import { parseStrict } from './helpers/prom-text.js'
import { spawnProxy } from './helpers/proxy-process.js'
import { startRedis } from './helpers/redis.js'
import { shadowBackend } from './helpers/shadow-backend.js'

const sum = (text: string, name: string, labels: Record<string, string> = {}) =>
  parseStrict(text)
    .samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((n, s) => n + s.value, 0)

describe('mirroring with --workers 2', () => {
  it.each(['memory', 'redis'])('%s store: every copy and mismatch is counted once, whichever worker took it', { timeout: 90_000 }, async (kind) => {
    const v1 = await shadowBackend('v1', (path) => ({ name: 'ann', path }))
    const v2 = await shadowBackend('v2', (path) => ({ name: path === '/u/7' ? 'bob' : 'ann', path }))
    let store: Record<string, unknown> | undefined
    if (kind === 'redis') {
      const redis = await startRedis()
      onTestFinished(() => redis.stop())
      store = { type: 'redis', url: redis.url, prefix: 'mirror-workers' }
    }
    const p = await spawnProxy(
      {
        ...(store ? { store } : {}),
        upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
        routes: [{ name: 'r', split: { v1: 1 }, mirror: { upstream: 'v2', percent: 100 } }],
      },
      ['--workers', '2'],
    )
    onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
    const pids = new Set<number>()
    await eventually(async () => {
      const res = await request(`${p.adminUrl}/api/instances`, { reset: true })
      const body = (await res.body.json()) as { instances: { pid: number }[] }
      for (const i of body.instances) pids.add(i.pid)
      expect(pids.size).toBeGreaterThanOrEqual(2)
    }, { timeoutMs: 15_000, intervalMs: 100 })
    // A connection per request, so node:cluster spreads them over both workers.
    for (let i = 0; i < 200; i += 10) {
      await Promise.all(
        Array.from({ length: 10 }, async (_, k) => {
          const res = await request(`${p.url}/u/${(i + k) % 10}`, { reset: true })
          expect(res.statusCode).toBe(200)
          await res.body.dump()
        }),
      )
    }
    await eventually(() => expect(v2.received.length).toBe(200), { timeoutMs: 10_000 })
    await eventually(
      async () => {
        const res = await request(`${p.adminUrl}/metrics`, { reset: true })
        const text = await res.body.text()
        expect(sum(text, 'switchyard_mirror_requests_total', { code_class: '2xx' })).toBe(200)
        expect(sum(text, 'switchyard_mirror_compared_total')).toBe(200)
        expect(sum(text, 'switchyard_mirror_mismatches_total', { kind: 'body' })).toBe(20)
        expect(sum(text, 'switchyard_requests_total', { upstream: 'v2' })).toBe(0)
      },
      { timeoutMs: 10_000, intervalMs: 200 },
    )
    await eventually(
      async () => {
        const res = await request(`${p.adminUrl}/api/routes/r/mirror?window=5m`, { reset: true })
        const body = (await res.body.json()) as { figures: { compared: number; requests: number; mismatches: { body: number }; samples: { path: string }[] } }
        expect(body.figures).toMatchObject({ compared: 200, requests: 200, mismatches: { body: 20 } })
        expect(body.figures.samples.every((s) => s.path === '/u/7')).toBe(true)
      },
      { timeoutMs: 15_000, intervalMs: 200 },
    )
  })
})
