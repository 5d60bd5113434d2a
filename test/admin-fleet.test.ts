/**
 * Admin API over a fleet of two in-process instances sharing one memory backing (the registry
 * and state a Redis would hold): `?waitApplied`, fleet-wide in-flight and drain.
 */
import { describe, expect, it } from 'vitest'
import { MemoryBacking, MemoryStore } from '../src/store/memory.js'
import { backend, startApp, twoVersions, type TestConfig } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'

async function fleet(config: TestConfig, b: { heartbeatMs?: number; instanceTtlMs?: number } = {}) {
  const backing = new MemoryBacking()
  const storeB = new MemoryStore(backing)
  const a = await startApp(config, { store: new MemoryStore(backing), heartbeatMs: 50 })
  const bApp = await startApp(config, { store: storeB, heartbeatMs: 50, ...b })
  return { a, b: bApp, storeB }
}

describe('admin API: a fleet of two instances', () => {
  it('?waitApplied answers 200 once both instances applied the write', async () => {
    const { a, b } = await fleet(twoVersions(await backend('v1'), await backend('v2')))
    expect((await a.admin.get('/api/instances')).body.instances).toHaveLength(2)
    const res = await a.admin.put('/api/routes/api/split?waitApplied=5000', { v2: 100 })
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ revision: 2, route: 'api', split: { v2: 100 } })
    // Answered only after B applied: B's own state already shows it.
    expect((await b.admin.get('/api/state')).body.revision).toBe(2)
    expect((await b.proxy('/x')).backend).toBe('v2')
  })

  it('?waitApplied answers 202 with the laggards at the deadline', async () => {
    // B stays registered (long TTL) but no longer hears of changes nor heartbeats: a stuck instance.
    const { a, b, storeB } = await fleet(twoVersions(await backend('v1'), await backend('v2')), {
      heartbeatMs: 60_000,
      instanceTtlMs: 60_000,
    })
    await storeB.close()
    const t0 = performance.now()
    const res = await a.admin.put('/api/routes/api/split?waitApplied=200', { v2: 100 })
    expect(performance.now() - t0).toBeGreaterThanOrEqual(150)
    expect(res.status).toBe(202)
    expect(res.headers.get('etag')).toBe('"2"')
    expect(res.body).toEqual({
      revision: 2,
      route: 'api',
      split: { v2: 100 },
      applied: false,
      laggards: [{ id: b.app.control.instanceId, host: expect.any(String), pid: process.pid, appliedRevision: 1 }],
    })
    // The write itself is committed and in force on A.
    expect((await a.admin.get('/api/state')).body.revision).toBe(2)
  })

  it('GET target sums in-flight over both instances; drain?waitMs waits for the other instance', async () => {
    const v1 = await backend('v1')
    const { a, b } = await fleet(twoVersions(v1, await backend('v2')))
    const target = `/api/upstreams/v1/targets/${v1.id}`
    const startedAt = performance.now()
    const slowOnB = b.proxy('/delay?ms=1200')
    const slowOnA = a.proxy('/delay?ms=1200')
    await eventually(async () => expect((await a.admin.get(target)).body.inflight).toBe(2))
    const res = await a.admin.post(`${target}/drain?waitMs=10000`)
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ state: 'draining', drained: true, inflight: 0 })
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(1150) // both requests had to finish
    expect((await slowOnA).status).toBe(200)
    expect((await slowOnB).status).toBe(200)
    // B reads A's count from A's last heartbeat (50 ms here), so it may lag a moment behind.
    await eventually(async () => expect((await b.admin.get(target)).body).toMatchObject({ state: 'draining', inflight: 0 }))
  })
})
