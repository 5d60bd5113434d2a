/**
 * A fleet on a real Redis (`?waitApplied`, propagation, outages): two or three switchyard instances
 * share one `redis-server` (spawned for this file on a free port, never 6379), each test under
 * its own key prefix. Writes through one instance route on the others; concurrent If-Match
 * writes lose nothing and double nothing; a Redis SIGKILL and an empty restart fail no proxied
 * request and lose no state; `?waitApplied` names a stopped instance; a missed pub/sub
 * message heals by the periodic re-read.
 *
 * The test that kills Redis runs last and restarts it itself, so the others see a running server.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import type { State } from '../src/config/schema.js'
import { storeKeys } from '../src/store/keys.js'
import { backend, startApp, twoVersions, adminClient, type TestApp, type TestConfig } from './helpers/admin.js'
import type { Backend } from './helpers/backend.js'
import { hit } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { spawnProxy } from './helpers/proxy-process.js'
import { readState, writeState } from './helpers/raw-state.js'
import { startRedis, type RedisServer } from './helpers/redis.js'

let redis: RedisServer
let prefixes = 0

beforeAll(async () => {
  redis = await startRedis()
})
afterAll(() => redis?.stop())

/** Short intervals so the fleet converges (and a dead instance expires) in test time. */
const FAST = { resyncMs: 200, heartbeatMs: 100, instanceTtlMs: 2_000 }

interface Fleet {
  prefix: string
  config: TestConfig
  v1: Backend
  v2: Backend
  apps: TestApp[]
}

/**
 * `n` in-process instances on one fresh prefix, proxying to two real backends v1 and v2
 * (route `api` on `/` split 100/0, route `other` on `/other` split 100/0).
 */
async function fleet(n: number, opts: { resyncMs?: number; heartbeatMs?: number; instanceTtlMs?: number } = FAST): Promise<Fleet> {
  const prefix = `fleet-${++prefixes}`
  const v1 = await backend('v1')
  const v2 = await backend('v2')
  const base = twoVersions(v1, v2)
  const config: TestConfig = {
    ...base,
    routes: [...base.routes, { name: 'other', match: { pathPrefix: '/other' }, split: { v1: 100, v2: 0 } }],
    store: { type: 'redis', url: redis.url, prefix },
  }
  const apps: TestApp[] = []
  for (let i = 0; i < n; i++) apps.push(await startApp(config, opts))
  return { prefix, config, v1, v2, apps }
}

async function revisionOf(app: TestApp): Promise<number> {
  const res = await app.admin.get<State>('/api/state')
  expect(res.status).toBe(200)
  return res.body.revision
}

/** Resolves once every app's GET /api/state shows `revision`. */
async function allAt(apps: TestApp[], revision: number, timeoutMs = 2_000): Promise<void> {
  await eventually(async () => {
    for (const app of apps) expect(await revisionOf(app)).toBe(revision)
  }, { timeoutMs })
}

function splitOf(state: State, route: string): Record<string, number> | undefined {
  return state.routes.find((r) => r.name === route)?.split
}

/** A raw ioredis client on the test server, closed after the test. */
function rawRedis(): Redis {
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1 })
  client.on('error', () => {}) // it outlives the outage in the Redis-kill test; calls still reject
  onTestFinished(async () => {
    await client.quit().catch(() => client.disconnect())
  })
  return client
}

/**
 * Proxied GETs in a loop, `perUrl` at a time through each url, until stopped or `maxMs`.
 * Anything but a 200 from a backend counts as a failure, with its reason kept.
 */
function loadLoop(urls: string[], perUrl: number, maxMs: number) {
  let stopped = false
  const deadline = performance.now() + maxMs
  const stats = { ok: 0, failed: 0, failures: [] as string[] }
  const fail = (why: string) => {
    stats.failed++
    if (stats.failures.length < 10) stats.failures.push(why)
  }
  const workers = urls.flatMap((url) =>
    Array.from({ length: perUrl }, async () => {
      while (!stopped && performance.now() < deadline) {
        try {
          const res = await hit(`${url}/load`)
          if (res.status === 200 && res.headers['x-backend'] !== undefined) stats.ok++
          else fail(`${url}: ${res.status} ${res.body.slice(0, 200)}`)
        } catch (err) {
          fail(`${url}: ${err instanceof Error ? err.message : String(err)}`)
        }
      }
    }),
  )
  const stop = async () => {
    stopped = true
    await Promise.all(workers)
    return stats
  }
  onTestFinished(async () => {
    await stop()
  })
  return { stats, stop }
}

describe('a fleet on Redis', () => {
  it('a split written through A routes on B and C, whose /api/state and registry show the new revision', async () => {
    // A long resync: B and C can only learn of the write through pub/sub within the deadline.
    const { apps } = await fleet(3, { ...FAST, resyncMs: 60_000 })
    const [a, b, c] = apps as [TestApp, TestApp, TestApp]
    const before = await revisionOf(a)
    for (const app of [b, c]) expect((await app.proxy('/x')).backend).toBe('v1')

    const res = await a.admin.put('/api/routes/api/split', { v2: 100 })
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ revision: before + 1, route: 'api', split: { v2: 100 } })

    await allAt([b, c], before + 1, 1_000)
    for (const app of [b, c]) {
      const state = (await app.admin.get<State>('/api/state')).body
      expect(splitOf(state, 'api')).toEqual({ v2: 100 })
      // Requests through B's and C's own proxy ports land on the new upstream.
      const answers = await Promise.all(Array.from({ length: 10 }, () => app.proxy('/x')))
      expect(answers.map((r) => [r.status, r.backend])).toEqual(Array(10).fill([200, 'v2']))
    }
    // Each instance reports the revision it applied to the registry.
    await eventually(async () => {
      const { instances } = (await c.admin.get('/api/instances')).body as { instances: { id: string; appliedRevision: number }[] }
      expect(instances.map((i) => i.id).sort()).toEqual(apps.map((x) => x.app.control.instanceId).sort())
      expect(instances.every((i) => i.appliedRevision === before + 1)).toBe(true)
    })
  })

  it('concurrent If-Match writes through A and B: exactly one 200 and one 412, the revision goes up by exactly 1', async () => {
    const { prefix, apps } = await fleet(3)
    const [a, b] = apps as [TestApp, TestApp, TestApp]
    const raw = rawRedis()
    for (let round = 0; round < 5; round++) {
      const revision = await revisionOf(a)
      await allAt(apps, revision)
      const ifMatch = { headers: { 'if-match': `"${revision}"` } }
      const [ra, rb] = await Promise.all([
        a.admin.put('/api/routes/api/split', { v1: 10 + round, v2: 90 }, ifMatch),
        b.admin.put('/api/routes/api/split', { v1: 90, v2: 10 + round }, ifMatch),
      ])
      expect([ra.status, rb.status].sort()).toEqual([200, 412])
      const [winner, loser] = ra.status === 200 ? [ra, rb] : [rb, ra]
      expect(winner.body.revision).toBe(revision + 1)
      expect(winner.headers.get('etag')).toBe(`"${revision + 1}"`)
      expect(loser.body.error.code).toBe('REVISION_MISMATCH')

      // Every instance, and the store itself, at exactly revision + 1 with the winner's split.
      await allAt(apps, revision + 1)
      for (const app of apps) expect(splitOf((await app.admin.get<State>('/api/state')).body, 'api')).toEqual(winner.body.split)
      expect(await raw.get(storeKeys(prefix).revision)).toBe(String(revision + 1))
      // One audit event for the one accepted write (the config seed has none).
      const { events } = (await a.admin.get('/api/events?limit=10')).body as { events: { revision: number }[] }
      expect(events[0]?.revision).toBe(revision + 1)
      expect(events.filter((e) => e.revision === revision + 1)).toHaveLength(1)
      expect(events).toHaveLength(round + 1)
    }
  })

  it('concurrent writes without If-Match through A and B both apply: no lost update', async () => {
    const { apps } = await fleet(3)
    const [a, b] = apps as [TestApp, TestApp, TestApp]
    const revision = await revisionOf(a)
    await allAt(apps, revision)
    const [ra, rb] = await Promise.all([
      a.admin.put('/api/routes/api/split', { v2: 100 }),
      b.admin.put('/api/routes/other/split', { v1: 50, v2: 50 }),
    ])
    expect([ra.status, rb.status]).toEqual([200, 200])
    expect([ra.body.revision, rb.body.revision].sort()).toEqual([revision + 1, revision + 2])
    await allAt(apps, revision + 2)
    for (const app of apps) {
      const state = (await app.admin.get<State>('/api/state')).body
      expect(splitOf(state, 'api')).toEqual({ v2: 100 })
      expect(splitOf(state, 'other')).toEqual({ v1: 50, v2: 50 })
    }
  })

  it('a state written to Redis without a publish (a missed message) is applied by every instance within a few resync intervals', async () => {
    const { prefix, apps } = await fleet(3)
    const raw = rawRedis()
    const revision = await revisionOf(apps[0]!)
    await allAt(apps, revision)

    const stored = (await readState(raw, prefix))!
    expect(stored.revision).toBe(revision)
    const next: State = { ...stored, revision: revision + 1, routes: stored.routes.map((r) => (r.name === 'api' ? { ...r, split: { v2: 100 } } : r)) }
    // A write without the PUBLISH: no instance hears of it.
    await writeState(raw, prefix, next, { publish: false })

    const t0 = performance.now()
    await allAt(apps, revision + 1, 5 * FAST.resyncMs)
    const healedMs = performance.now() - t0
    expect(healedMs).toBeLessThan(5 * FAST.resyncMs)
    for (const app of apps) {
      expect(splitOf((await app.admin.get<State>('/api/state')).body, 'api')).toEqual({ v2: 100 })
      expect((await app.proxy('/x')).backend).toBe('v2')
    }
  })

  it('?waitApplied: 200 when every instance applied; 202 naming a stopped instance that is still registered', async () => {
    const f = await fleet(2)
    const [a, b] = f.apps as [TestApp, TestApp]
    // C is the real CLI in its own process (default heartbeat 1 s, registry TTL 5 s), so it can be SIGSTOPped.
    const c = await spawnProxy({ ...f.config })
    let stoppedC = false
    onTestFinished(async () => {
      if (stoppedC) process.kill(c.pid, 'SIGCONT')
      const killer = setTimeout(() => c.child.kill('SIGKILL'), 5_000)
      await c.stop('SIGTERM')
      clearTimeout(killer)
    })
    const cAdmin = adminClient(c.adminUrl)
    const cId = await eventually(async () => {
      const { instances } = (await a.admin.get('/api/instances')).body as { instances: { id: string; pid: number }[] }
      expect(instances).toHaveLength(3)
      const id = instances.find((i) => i.pid === c.pid)?.id
      expect(id).toBeDefined()
      return id!
    })

    const ok = await a.admin.put('/api/routes/api/split?waitApplied=1000', { v1: 50, v2: 50 })
    expect(ok.status).toBe(200)
    const applied = ok.body.revision as number
    // Answered only once C had applied it: its own copy shows it already.
    expect((await cAdmin.get<State>('/api/state')).body.revision).toBe(applied)
    expect((await b.admin.get<State>('/api/state')).body.revision).toBe(applied)

    // C stops applying (and heartbeating) but its registry entry lives on for its TTL.
    process.kill(c.pid, 'SIGSTOP')
    stoppedC = true
    const t0 = performance.now()
    const late = await a.admin.put('/api/routes/api/split?waitApplied=1000', { v2: 100 })
    expect(performance.now() - t0).toBeGreaterThanOrEqual(900)
    expect(late.status).toBe(202)
    expect(late.body).toMatchObject({ revision: applied + 1, route: 'api', split: { v2: 100 }, applied: false })
    expect(late.body.laggards).toEqual([{ id: cId, host: expect.any(String), pid: c.pid, appliedRevision: applied }])
    // The write is committed and in force on the running instances.
    await allAt([a, b], applied + 1)

    // C resumes, catches up by itself, and the next waited write is confirmed fleet-wide again.
    process.kill(c.pid, 'SIGCONT')
    stoppedC = false
    await eventually(async () => expect((await cAdmin.get<State>('/api/state')).body.revision).toBe(applied + 1))
    const again = await b.admin.put('/api/routes/api/split?waitApplied=1000', { v1: 100 })
    expect(again.status).toBe(200)
    expect((await cAdmin.get<State>('/api/state')).body.revision).toBe(applied + 2)
    expect((await hit(`${c.url}/x`)).headers['x-backend']).toBe('v1')
  })

  // Last: it kills Redis (and restarts it, also on failure, for any test added after it).
  it('Redis SIGKILLed under load, then restarted empty: no failed proxied request, 503 writes, state re-seeded', async () => {
    let down = false
    onTestFinished(async () => {
      if (down) await redis.restart()
    })
    // Long resync: after the restart, B can only hear of a write through a re-made subscription.
    const { prefix, apps } = await fleet(2, { ...FAST, resyncMs: 60_000 })
    const [a, b] = apps as [TestApp, TestApp]
    const raw = rawRedis()

    // A state that differs from the config's seed (revision 1, split 100/0) in revision and content.
    expect((await a.admin.put('/api/routes/api/split', { v1: 30, v2: 70 })).status).toBe(200)
    const last = await b.admin.put('/api/routes/other/split', { v2: 100 })
    expect(last.status).toBe(200)
    await allAt(apps, last.body.revision)
    const before = (await a.admin.get<State>('/api/state')).body

    const load = loadLoop([a.app.proxyUrl, b.app.proxyUrl], 4, 20_000)
    await eventually(() => expect(load.stats.ok).toBeGreaterThan(100))

    // Outage.
    await redis.kill('SIGKILL')
    down = true
    const atKill = load.stats.ok
    await eventually(() => {
      for (const app of apps) expect(app.app.control.store.connected).toBe(false)
    }, { timeoutMs: 3_000 })
    for (const app of apps) {
      const res = await app.admin.put('/api/routes/api/split', { v1: 100 })
      expect(res.status).toBe(503)
      expect(res.body.error.code).toBe('STORE_UNAVAILABLE')
      // Still serving, and showing, the last known state.
      expect((await app.admin.get<State>('/api/state')).body).toEqual(before)
    }
    // Proxying goes on during the outage, through both instances.
    await eventually(() => expect(load.stats.ok).toBeGreaterThan(atKill + 200))
    expect(load.stats.failures).toEqual([])

    // Redis back, empty, on the same port.
    await redis.restart()
    down = false
    const t0 = performance.now()
    // The fleet re-seeds it with the last state it had, not the config's seed.
    await eventually(async () => {
      const stored = await readState(raw, prefix).catch(() => null)
      expect(stored).toEqual(before)
    }, { timeoutMs: 5_000 })
    // Writes work again within 5 s of the restart, on top of the pre-outage revision.
    const write = await eventually(async () => {
      const res = await a.admin.put('/api/routes/api/split', splitOf(before, 'api'), { headers: { 'if-match': String(before.revision) } })
      expect(res.status).toBe(200)
      return res
    }, { timeoutMs: 5_000, intervalMs: 50 })
    expect(performance.now() - t0).toBeLessThan(5_000)
    expect(write.body.revision).toBe(before.revision + 1)
    for (const app of apps) expect(app.app.control.store.connected).toBe(true)
    await allAt(apps, before.revision + 1)
    for (const app of apps) {
      const state = (await app.admin.get<State>('/api/state')).body
      expect({ ...state, revision: before.revision }).toEqual(before)
    }
    // B re-subscribed by itself: with a 60 s resync, only pub/sub can bring it this write in time.
    const after = await a.admin.put('/api/routes/other/split', { v1: 100 })
    expect(after.status).toBe(200)
    await allAt([b], after.body.revision, 1_000)

    const stats = await load.stop()
    expect(stats.failures).toEqual([])
    expect(stats.failed).toBe(0)
    expect(stats.ok).toBeGreaterThan(atKill + 200)
  })
})
