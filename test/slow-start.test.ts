/**
 * Slow start: a target that joins a running upstream (or comes back) gets a growing share of
 * new requests over `slowStartMs`, in both balancers; without slow start it gets its full share
 * at once. Shares are measured on real sockets, by when each request was sent relative to the
 * moment the target joined; which events start a ramp is checked on compiled tables.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import type { State } from '../src/config/schema.js'
import { Resources } from '../src/dataplane/resources.js'
import { compileTable } from '../src/dataplane/table.js'
import { startBackend, type Backend } from './helpers/backend.js'
import { hit } from './helpers/client.js'
import { startDataplane, type Seed } from './helpers/dataplane.js'

let a: Backend, b: Backend, c: Backend
beforeAll(async () => {
  ;[a, b, c] = await Promise.all([startBackend('a'), startBackend('b'), startBackend('c')])
})
afterAll(async () => {
  await Promise.all([a.close(), b.close(), c.close()])
})

/** Keeps `concurrency` requests going for `durationMs`; each answer tagged with its send time after `t0`. */
async function load(url: string, t0: number, durationMs: number, concurrency = 4) {
  const out: { at: number; backend: string }[] = []
  const deadline = t0 + durationMs
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const at = performance.now() - t0
        const res = await hit(`${url}/x`)
        out.push({ at, backend: String(res.headers['x-backend']) })
      }
    }),
  )
  return out
}

function share(answers: { at: number; backend: string }[], name: string, from: number, to: number) {
  const window = answers.filter((x) => x.at >= from && x.at < to)
  return { n: window.length, share: window.filter((x) => x.backend === name).length / window.length }
}

/** Warms the proxy and its connections up, so the early window is not spent on cold starts. */
async function warm(url: string) {
  for (let i = 0; i < 40; i++) await hit(`${url}/x`)
}

function seed(urls: string[], extra: Partial<Seed['upstreams'][string]> = {}): Seed {
  return { upstreams: { v1: { targets: urls.map((url) => ({ url })), ...extra } }, routes: [{ name: 'r', split: { v1: 1 } }] }
}

describe('share of a target that joins', () => {
  it('least-request: well below an even share early in slowStartMs, an even share after it', async () => {
    const p = await startDataplane(seed([a.url], { slowStartMs: 2_000 }))
    onTestFinished(() => p.close())
    await warm(p.url)
    p.apply(seed([a.url, b.url], { slowStartMs: 2_000 }))
    const t0 = performance.now()
    const answers = await load(p.url, t0, 2_400)
    // Factor 0.1 → 0.15 in the first 300 ms: b's share stays near that (it is the least loaded
    // target whenever it is not held back), far below the even 0.5 it gets after the window.
    const early = share(answers, 'b', 0, 300)
    const late = share(answers, 'b', 2_100, Infinity)
    expect(early.n).toBeGreaterThanOrEqual(20)
    expect(late.n).toBeGreaterThanOrEqual(20)
    expect(early.share).toBeLessThan(0.25)
    expect(late.share).toBeGreaterThan(0.35)
    expect(late.share).toBeLessThan(0.65)
    // The ramp is over: picks are back on the path that reads no clock.
    expect(p.dp.resources.upstreams.get('v1')!.lastRampStart).toBe(-1)
  })

  it('power of two choices: well below an even share early in slowStartMs, an even share after it', async () => {
    const p = await startDataplane(seed([a.url, b.url], { slowStartMs: 2_000, balance: 'p2c' }))
    onTestFinished(() => p.close())
    await warm(p.url)
    p.apply(seed([a.url, b.url, c.url], { slowStartMs: 2_000, balance: 'p2c' }))
    const t0 = performance.now()
    const answers = await load(p.url, t0, 2_400)
    const early = share(answers, 'c', 0, 300)
    const late = share(answers, 'c', 2_100, Infinity)
    expect(early.n).toBeGreaterThanOrEqual(20)
    expect(early.share).toBeLessThan(0.15)
    expect(late.share).toBeGreaterThan(0.2)
    expect(late.share).toBeLessThan(0.47)
  })

  it('without slowStartMs a new target gets an even share at once', async () => {
    const p = await startDataplane(seed([a.url]))
    onTestFinished(() => p.close())
    await warm(p.url)
    p.apply(seed([a.url, b.url]))
    const t0 = performance.now()
    const early = share(await load(p.url, t0, 300), 'b', 0, 300)
    expect(early.n).toBeGreaterThanOrEqual(20)
    expect(early.share).toBeGreaterThan(0.35)
  })
})

describe('what starts a ramp (compiled tables)', () => {
  function state(targets: { id: string; state?: 'active' | 'draining' }[], revision: number, healthCheck = false): State {
    return {
      revision,
      upstreams: {
        v1: {
          slowStartMs: 10_000,
          targets: targets.map((t, i) => ({ url: `http://127.0.0.1:${4100 + i}`, id: t.id, state: t.state ?? 'active' })),
          ...(healthCheck ? { healthCheck: { path: '/healthz' } } : {}),
        },
      },
      routes: [{ name: 'r', split: { v1: 1 } }],
      flags: {},
      rollouts: {},
    }
  }
  function resources() {
    const res = new Resources()
    onTestFinished(() => res.close())
    return res
  }
  const rt = (res: Resources, id: string) => res.targets.get(`v1/${id}`)!

  it('the targets of the first table start together: none ramps', () => {
    const res = resources()
    compileTable(state([{ id: 'x' }, { id: 'y' }], 1), res)
    expect(rt(res, 'x').rampStart).toBe(-1)
    expect(res.upstreams.get('v1')!.lastRampStart).toBe(-1)
  })

  it('a target added later ramps; so does one going from draining back to active', () => {
    const res = resources()
    compileTable(state([{ id: 'x' }, { id: 'y', state: 'draining' }], 1), res)
    compileTable(state([{ id: 'x' }, { id: 'y', state: 'draining' }, { id: 'z' }], 2), res)
    expect(rt(res, 'z').rampStart).toBeGreaterThanOrEqual(0)
    expect(rt(res, 'y').rampStart).toBe(-1)
    compileTable(state([{ id: 'x' }, { id: 'y' }, { id: 'z' }], 3), res)
    expect(rt(res, 'y').rampStart).toBeGreaterThanOrEqual(0)
    expect(rt(res, 'x').rampStart).toBe(-1)
  })

  it('a target coming back from a failed health check or a passive failure ramps', () => {
    const res = resources()
    compileTable(state([{ id: 'x' }, { id: 'y' }], 1), res)
    const x = rt(res, 'x')
    x.healthy = false
    expect(x.rampStart).toBe(-1)
    x.healthy = true
    expect(x.rampStart).toBeGreaterThanOrEqual(0)
    expect(res.upstreams.get('v1')!.lastRampStart).toBe(x.rampStart)
  })

  it('a target added to a health-checked upstream ramps from its first passing check, not from the add', () => {
    const res = resources()
    compileTable(state([{ id: 'x' }], 1, true), res)
    compileTable(state([{ id: 'x' }, { id: 'n' }], 2, true), res, { initiallyHealthy: (_u, id) => id !== 'n' })
    const n = rt(res, 'n')
    expect(n.available).toBe(false)
    expect(n.rampStart).toBe(-1)
    n.healthy = true
    expect(n.rampStart).toBeGreaterThanOrEqual(0)
  })
})
