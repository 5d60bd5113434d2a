/**
 * One contract, two stores: every behaviour the control plane relies on is checked against
 * the memory store and against a real redis-server, so the two cannot drift apart.
 * Each test gets a fresh "world" (a new memory backing, or a new Redis key prefix) and may
 * open several store instances on it, like several proxy instances of one fleet.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import type { State } from '../src/config/schema.js'
import { SwitchyardError } from '../src/errors.js'
import { MemoryBacking, MemoryStore } from '../src/store/memory.js'
import { RedisStore } from '../src/store/redis.js'
import type { AuditEvent, Store } from '../src/store/store.js'
import { eventually } from './helpers/eventually.js'
import { IpcWorld } from './helpers/ipc-store.js'
import { startRedis, type RedisServer } from './helpers/redis.js'

interface World {
  /** Opens another store instance on this world's data; closed when the test ends unless `autoClose` is false. */
  open(autoClose?: boolean): Promise<Store>
  /** Store-specific check that a closed store left nothing behind on the server side. */
  assertNoConnections(): Promise<void>
}

interface Harness {
  kind: 'memory' | 'redis'
  setup(): Promise<void>
  teardown(): Promise<void>
  world(): World
}

async function opened(store: Store, autoClose: boolean): Promise<Store> {
  if (autoClose) onTestFinished(() => store.close())
  await store.open()
  return store
}

const memory: Harness = {
  kind: 'memory',
  setup: async () => {},
  teardown: async () => {},
  world() {
    const backing = new MemoryBacking()
    return {
      open: (autoClose = true) => opened(new MemoryStore(backing), autoClose),
      assertNoConnections: async () => expect(backing.stores.size).toBe(0),
    }
  },
}

let redis: RedisServer | undefined
let worlds = 0
const redisHarness: Harness = {
  kind: 'redis',
  setup: async () => {
    redis = await startRedis()
  },
  teardown: async () => {
    await redis?.stop()
  },
  world() {
    const server = redis
    if (server === undefined) throw new Error('redis not started')
    const prefix = `contract-${++worlds}` // a fresh, empty key space per test
    return {
      open: (autoClose = true) => opened(new RedisStore({ url: server.url, prefix }), autoClose),
      async assertNoConnections() {
        const admin = new Redis(server.url)
        try {
          const clients = (await admin.client('LIST')) as string
          expect(clients).not.toContain(`name=switchyard:${prefix}:`)
        } finally {
          await admin.quit()
        }
      },
    }
  },
}

function state(revision: number, weight = 100): State {
  return {
    revision,
    upstreams: { v1: { targets: [{ id: '127.0.0.1:3001', url: 'http://127.0.0.1:3001', state: 'active' }] } },
    routes: [{ name: 'api', split: { v1: weight } }],
    flags: {},
    rollouts: {},
  }
}

function event(revision: number): AuditEvent {
  return { revision, at: new Date().toISOString(), actor: 'test', reason: null, action: 'split.put', target: 'routes/api/split', before: null, after: { v1: 100 } }
}

/** Records every onChange call with the time it arrived. */
function recordChanges(store: Store): Array<{ revision: number; at: number }> {
  const seen: Array<{ revision: number; at: number }> = []
  store.onChange((revision) => seen.push({ revision, at: performance.now() }))
  return seen
}

/** The timer and socket handles of this process, to prove close() left none behind. */
function handles(): Record<string, number> {
  const counts: Record<string, number> = { Timeout: 0, TCPSocketWrap: 0 }
  for (const kind of process.getActiveResourcesInfo()) if (kind in counts) counts[kind] = (counts[kind] ?? 0) + 1
  return counts
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const err = await promise.then(() => null, (e: unknown) => e)
  expect(err).toBeInstanceOf(SwitchyardError)
  expect((err as SwitchyardError).code).toBe(code)
}

/** The IPC store of `--workers` with the memory store: each opened store is a worker-like child process. */
const ipcHarness: Harness = {
  kind: 'memory',
  setup: async () => {},
  teardown: async () => {},
  world() {
    const world = new IpcWorld()
    return {
      open: async (autoClose = true) => opened(await world.open(), autoClose),
      assertNoConnections: async () => expect(world.children.size).toBe(0),
    }
  },
}

describe.each([
  { name: 'memory', harness: memory },
  { name: 'redis', harness: redisHarness },
  { name: 'ipc (workers)', harness: ipcHarness },
])('$name store contract', ({ harness }) => {
  beforeAll(() => harness.setup())
  afterAll(() => harness.teardown())

  it('is empty at first: load() is null, no events, no instances', async () => {
    const store = await harness.world().open()
    expect(store.kind).toBe(harness.kind)
    expect(store.connected).toBe(true)
    expect(await store.load()).toBeNull()
    expect(await store.events(10)).toEqual([])
    expect(await store.instances()).toEqual([])
  })

  it('accepts a first commit with expected 0 on an empty store', async () => {
    const store = await harness.world().open()
    expect(await store.commit(state(1), event(1), 0)).toEqual({ ok: true, revision: 1 })
    expect(await store.load()).toEqual(state(1))
    expect((await store.events(10)).map((e) => e.revision)).toEqual([1])
  })

  it('answers empty to a commit with expected > 0 on an empty store, and writes nothing', async () => {
    const store = await harness.world().open()
    expect(await store.commit(state(4), event(4), 3)).toEqual({ ok: false, reason: 'empty' })
    expect(await store.load()).toBeNull()
    expect(await store.events(10)).toEqual([])
  })

  it('commits when expected matches, one revision at a time', async () => {
    const store = await harness.world().open()
    await store.commit(state(1), event(1), 0)
    expect(await store.commit(state(2, 50), event(2), 1)).toEqual({ ok: true, revision: 2 })
    expect(await store.load()).toEqual(state(2, 50))
  })

  it('rejects a stale expected revision with the current one, and changes nothing', async () => {
    const store = await harness.world().open()
    await store.commit(state(1), event(1), 0)
    await store.commit(state(2, 50), event(2), 1)
    expect(await store.commit(state(2, 10), event(2), 1)).toEqual({ ok: false, reason: 'revision-mismatch', currentRevision: 2 })
    expect(await store.load()).toEqual(state(2, 50))
    expect((await store.events(10)).map((e) => e.revision)).toEqual([2, 1])
  })

  it('lets exactly one of many concurrent commits with the same expected revision win', async () => {
    const world = harness.world()
    const [a, b] = [await world.open(), await world.open()]
    await a.commit(state(1), event(1), 0)
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).commit(state(2, i), event(2), 1)))
    expect(results.filter((r) => r.ok)).toHaveLength(1)
    for (const r of results.filter((r) => !r.ok)) expect(r).toEqual({ ok: false, reason: 'revision-mismatch', currentRevision: 2 })
    expect((await b.load())?.revision).toBe(2)
  })

  it('seeds an empty store, never overwrites a higher revision, and lets a higher one win', async () => {
    const store = await harness.world().open()
    expect(await store.seed(state(5, 5))).toBe(true)
    expect(await store.load()).toEqual(state(5, 5))
    expect(await store.seed(state(3, 3))).toBe(false)
    expect(await store.seed(state(5, 9))).toBe(false)
    expect(await store.load()).toEqual(state(5, 5))
    expect(await store.seed(state(7, 7))).toBe(true)
    expect(await store.load()).toEqual(state(7, 7))
    expect(await store.commit(state(8), event(8), 7)).toEqual({ ok: true, revision: 8 })
  })

  it('tells every instance, the writer included, of a commit or seed within 100 ms', async () => {
    const world = harness.world()
    const [a, b] = [await world.open(), await world.open()]
    const [seenA, seenB] = [recordChanges(a), recordChanges(b)]
    const t0 = performance.now()
    await a.commit(state(1), event(1), 0)
    await eventually(() => expect(seenB.map((c) => c.revision)).toEqual([1]), { timeoutMs: 1000 })
    expect(seenB[0]!.at - t0).toBeLessThan(100)
    await eventually(() => expect(seenA.map((c) => c.revision)).toEqual([1]), { timeoutMs: 1000 })
    await b.seed(state(9))
    await eventually(() => expect(seenA.map((c) => c.revision)).toEqual([1, 9]), { timeoutMs: 1000 })
  })

  it('lists events newest first, honours the limit, and keeps only the newest 1000', async () => {
    const store = await harness.world().open()
    for (let r = 1; r <= 3; r++) await store.commit(state(r), event(r), r - 1)
    expect((await store.events(2)).map((e) => e.revision)).toEqual([3, 2])
    expect((await store.events(10)).map((e) => e.revision)).toEqual([3, 2, 1])
    expect(await store.events(0)).toEqual([])
    expect((await store.events(1))[0]).toEqual(expect.objectContaining({ actor: 'test', action: 'split.put', reason: null }))
    for (let r = 4; r <= 1005; r++) await store.commit(state(r), event(r), r - 1)
    const all = await store.events(5000)
    expect(all).toHaveLength(1000)
    expect(all[0]?.revision).toBe(1005)
    expect(all[999]?.revision).toBe(6)
  })

  it('lists registered instances until their TTL runs out, and forgets unregistered ones', async () => {
    const world = harness.world()
    const [a, b] = [await world.open(), await world.open()]
    const t0 = performance.now()
    await a.register({ id: 'short', host: 'h1', pid: 1, appliedRevision: 3, inflight: { 'v1/t1': 2 } }, 300)
    await b.register({ id: 'long', host: 'h2', pid: 2, appliedRevision: 3, inflight: {} }, 30_000)
    const listed = await b.instances()
    expect(listed.map((i) => i.id)).toEqual(['long', 'short'])
    expect(listed[1]).toEqual(expect.objectContaining({ host: 'h1', pid: 1, appliedRevision: 3, inflight: { 'v1/t1': 2 } }))
    expect(Date.now() - Date.parse(listed[1]!.lastSeen)).toBeLessThan(5_000)

    await eventually(async () => expect((await a.instances()).map((i) => i.id)).toEqual(['long']), { timeoutMs: 3000 })
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290) // never before its TTL

    await b.register({ id: 'long', host: 'h2', pid: 2, appliedRevision: 4, inflight: {} }, 30_000) // a refresh replaces
    expect((await a.instances()).map((i) => i.appliedRevision)).toEqual([4])
    await b.unregister('long')
    expect(await a.instances()).toEqual([])
  })

  it('leases: one holder at a time; its holder renews it; another takes it once it expired or was released', async () => {
    const world = harness.world()
    const [a, b] = [await world.open(), await world.open()]
    const t0 = performance.now()
    expect(await a.lease('driver', 'A', 400)).toBe(true)
    expect(await b.lease('driver', 'B', 400)).toBe(false)
    expect(await b.leaseHolder('driver')).toBe('A')
    expect(await b.lease('other', 'B', 400)).toBe(true) // names are independent
    // A renewal extends it from now: still A's past its first TTL.
    await new Promise((r) => setTimeout(r, 250))
    expect(await a.lease('driver', 'A', 400)).toBe(true)
    await new Promise((r) => setTimeout(r, 250))
    expect(performance.now() - t0).toBeGreaterThan(400)
    expect(await b.lease('driver', 'B', 400)).toBe(false)
    // Not renewed: it expires (by the store's clock) and B takes it.
    await eventually(async () => expect(await b.lease('driver', 'B', 30_000)).toBe(true), { timeoutMs: 3_000, intervalMs: 20 })
    expect(await a.lease('driver', 'A', 400)).toBe(false)
    expect(await a.releaseLease('driver', 'A')).toBe(false) // only the holder can release
    expect(await a.leaseHolder('driver')).toBe('B')
    expect(await b.releaseLease('driver', 'B')).toBe(true)
    expect(await a.leaseHolder('driver')).toBeNull()
    expect(await a.lease('driver', 'A', 400)).toBe(true)
  })

  it('concurrent attempts on a free lease: exactly one wins', async () => {
    const world = harness.world()
    const stores = [await world.open(), await world.open(), await world.open()]
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => stores[i % 3]!.lease('race', `h${i}`, 10_000)))
    expect(results.filter(Boolean)).toHaveLength(1)
    expect(await stores[0]!.leaseHolder('race')).toBe(`h${results.indexOf(true)}`)
  })

  it('close() stops notifications, fails later calls, and leaves no socket or timer', async () => {
    const world = harness.world()
    const a = await world.open(false)
    const b = await world.open(false)
    const [seenA, seenB] = [recordChanges(a), recordChanges(b)]
    await b.close()
    expect(b.connected).toBe(false)
    await expectCode(b.load(), 'STORE_UNAVAILABLE')
    await a.commit(state(1), event(1), 0)
    await eventually(() => expect(seenA.map((c) => c.revision)).toEqual([1]), { timeoutMs: 1000 })
    expect(seenB).toEqual([])
    await a.close()
    await a.close() // idempotent
    await eventually(() => expect(handles()).toEqual({ Timeout: 0, TCPSocketWrap: 0 }), { timeoutMs: 3000 })
    await world.assertNoConnections()
  })
})
