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
import { applyDelta, isEmpty, noneTouched, touchedOf, type Touched } from '../src/state/delta.js'
import { touchedBetween as diffStates } from '../src/state/diff.js'
import { digestAfter, stateDigest } from '../src/state/digest.js'
import type { AuditEvent, Store } from '../src/store/store.js'
import type { TelemetrySample } from '../src/telemetry/types.js'
import { eventually } from './helpers/eventually.js'
import { IpcWorld } from './helpers/ipc-store.js'
import { startRedis, type RedisServer } from './helpers/redis.js'
import { pick, prng } from './helpers/random.js'

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
  /** `changelogCap` lowers the change log's length so a gap beyond it is quick to make. */
  world(options?: WorldOptions): World
}

interface WorldOptions {
  changelogCap?: number
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
  world(options = {}) {
    const backing = new MemoryBacking(options)
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
  world(options = {}) {
    const server = redis
    if (server === undefined) throw new Error('redis not started')
    const prefix = `contract-${++worlds}` // a fresh, empty key space per test
    return {
      open: (autoClose = true) => opened(new RedisStore({ url: server.url, prefix, ...options }), autoClose),
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
  world(options = {}) {
    const world = new IpcWorld(options)
    return {
      open: async (autoClose = true) => opened(await world.open(), autoClose),
      assertNoConnections: async () => expect(world.children.size).toBe(0),
    }
  },
}

/** A state with some of everything, for the changes tests. */
function richState(revision: number): State {
  const upstream = (port: number) => ({ targets: [{ id: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}`, state: 'active' as const }] })
  return {
    revision,
    upstreams: { u1: upstream(3001), u2: upstream(3002) },
    routes: ['a', 'b', 'c'].map((name) => ({ name, match: { pathPrefix: `/${name}/` }, split: { u1: 100 } })),
    flags: { f1: { enabled: true } },
    rollouts: {},
  }
}

/**
 * A random write on top of `prev` (a fresh copy, revision + 1): a split, a route added at the
 * end or in the middle, deleted, re-created, two routes swapped, an upstream, flag or rollout
 * put or deleted, or two of these at once.
 */
function randomChange(rand: () => number, prev: State, names: { next: number; deleted: string[] }): State {
  const next = structuredClone(prev)
  next.revision = prev.revision + 1
  const change = (): void => {
    const routes = next.routes
    const kind = pick(rand, ['split', 'split', 'add', 'insert', 'delete', 'recreate', 'swap', 'upstream', 'dropUpstream', 'flag', 'dropFlag', 'rollout', 'dropRollout'] as const)
    const someRoute = () => routes[Math.floor(rand() * routes.length)]
    const newRoute = (name: string) => ({ name, match: { pathPrefix: `/${name}/` }, split: { u1: Math.floor(rand() * 100) + 1 } })
    if (kind === 'split' && routes.length > 0) someRoute()!.split = { u1: Math.floor(rand() * 100) + 1 }
    else if (kind === 'add') routes.push(newRoute(`n${names.next++}`))
    else if (kind === 'insert') routes.splice(Math.floor(rand() * (routes.length + 1)), 0, newRoute(`n${names.next++}`))
    else if (kind === 'delete' && routes.length > 1) names.deleted.push(routes.splice(Math.floor(rand() * routes.length), 1)[0]!.name)
    else if (kind === 'recreate' && names.deleted.length > 0) routes.push(newRoute(names.deleted.pop()!))
    else if (kind === 'swap' && routes.length > 1) {
      const i = Math.floor(rand() * (routes.length - 1))
      ;[routes[i], routes[i + 1]] = [routes[i + 1]!, routes[i]!]
    } else if (kind === 'upstream') next.upstreams[pick(rand, ['u1', 'u2', 'u3'])] = { targets: [{ id: 'h:1', url: `http://h:${Math.floor(rand() * 1000) + 1}`, state: 'active' }] }
    else if (kind === 'dropUpstream') delete next.upstreams[pick(rand, ['u2', 'u3'])]
    else if (kind === 'flag') next.flags[pick(rand, ['f1', 'f2'])] = { enabled: rand() < 0.5, percent: Math.floor(rand() * 100) }
    else if (kind === 'dropFlag') delete next.flags[pick(rand, ['f1', 'f2'])]
    else if (kind === 'rollout') next.rollouts[pick(rand, ['ro1', 'ro2'])] = { step: Math.floor(rand() * 10) }
    else if (kind === 'dropRollout') delete next.rollouts[pick(rand, ['ro1', 'ro2'])]
  }
  change()
  if (rand() < 0.25) change()
  return next
}

/** The union of what the writes after `revision` touched. */
function touchedAfter(touchedAt: Map<number, Touched>, revision: number): Touched {
  const union = noneTouched()
  for (const [r, t] of touchedAt) {
    if (r <= revision) continue
    for (const kind of ['upstreams', 'routes', 'flags', 'rollouts'] as const) union[kind] = [...new Set([...union[kind], ...t[kind]])]
    union.order ||= t.order
  }
  return union
}

/** The names a delta carries, sorted, to compare with what was touched. */
function namesOf(t: Touched): Touched {
  const sorted = (names: string[]) => [...names].sort()
  return { upstreams: sorted(t.upstreams), routes: sorted(t.routes), flags: sorted(t.flags), rollouts: sorted(t.rollouts), order: t.order }
}

function withSplit(prev: State, route: string, weight: number): State {
  return { ...prev, revision: prev.revision + 1, routes: prev.routes.map((r) => (r.name === route ? { ...r, split: { u1: weight } } : r)) }
}

function touchedRoutes(routes: string[], order = false): Touched {
  return { ...noneTouched(), routes, order }
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

  it('telemetry: every instance\'s samples after `since`, from any handle; older than the retention dropped; a silent instance forgotten', async () => {
    const world = harness.world()
    const [a, b] = [await world.open(), await world.open()]
    const now = Date.now()
    const sample = (instance: string, at: number, requests: number): TelemetrySample => ({
      instance,
      at,
      periodMs: 1000,
      series: [{ route: 'api', upstream: 'v2', byClass: [0, 0, requests, 0, 0, 1], errors: 1, latency: [0, 3, 0, requests - 2], latencySumMs: 12.5 }],
    })
    await a.pushTelemetry(sample('A', now - 3000, 10), 60_000)
    await a.pushTelemetry(sample('A', now - 1000, 20), 60_000)
    await b.pushTelemetry(sample('B', now - 500, 30), 60_000)
    const all = await b.telemetry(now - 10_000)
    expect(all.map((x) => `${x.instance}@${now - x.at}`).sort()).toEqual(['A@1000', 'A@3000', 'B@500'])
    expect(all.find((x) => x.instance === 'B')).toEqual(sample('B', now - 500, 30))
    expect((await a.telemetry(now - 2000)).map((x) => x.instance).sort()).toEqual(['A', 'B'])
    expect(await a.telemetry(now)).toEqual([])
    // a push drops the instance's samples older than its retention
    await a.pushTelemetry(sample('A', now, 5), 2000)
    expect((await b.telemetry(0)).filter((x) => x.instance === 'A').map((x) => now - x.at).sort()).toEqual([0, 1000])
    // an instance that stops pushing is forgotten once its retention ran out
    await b.pushTelemetry(sample('B', now, 1), 300)
    await eventually(async () => expect((await a.telemetry(0)).map((x) => x.instance)).not.toContain('B'), { timeoutMs: 3000 })
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

  it('changesSince: from every earlier revision, the changes applied to the state loaded there give load()', async () => {
    const world = harness.world()
    const [writer, reader] = [await world.open(), await world.open()]
    const rand = prng(11)
    const names = { next: 0, deleted: [] as string[] }
    let current = richState(1)
    await writer.commit(current, event(1), 0)
    const loaded = new Map<number, State>([[1, (await reader.load())!]])
    const touchedAt = new Map<number, Touched>()
    for (let r = 2; r <= 40; r++) {
      const next = randomChange(rand, current, names)
      const touched = diffStates(current, next)
      expect(await writer.commit(next, event(r), r - 1, touched)).toEqual({ ok: true, revision: r })
      touchedAt.set(r, touched)
      current = next
      const state = (await reader.load())!
      expect(state).toEqual(next)
      loaded.set(r, state)
    }
    const latest = await reader.load()
    // Every earlier revision: an instance that missed every message since then.
    for (const [r, base] of loaded) {
      const delta = await reader.changesSince(r)
      expect(delta, `from revision ${r}`).not.toBeNull()
      expect(delta!.revision).toBe(40)
      expect(applyDelta(base, delta!), `from revision ${r}`).toEqual(latest)
      // Only what changed since r, nothing more.
      expect(namesOf(touchedOf(delta!)), `from revision ${r}`).toEqual(namesOf(touchedAfter(touchedAt, r)))
    }
  })

  it('changesSince the current revision is an empty delta', async () => {
    const world = harness.world()
    const [a, b] = [await world.open(), await world.open()]
    await a.commit(richState(1), event(1), 0)
    expect(await a.commit(withSplit(richState(1), 'b', 40), event(2), 1, touchedRoutes(['b']))).toEqual({ ok: true, revision: 2 })
    const delta = await b.changesSince(2)
    expect(delta).toEqual({ revision: 2, upstreams: {}, routes: {}, flags: {}, rollouts: {}, digest: stateDigest(withSplit(richState(1), 'b', 40)) })
    expect(isEmpty(delta!)).toBe(true)
  })

  it('head: the revision and the digest of the stored state, as written with the commit or seed; computed from the whole state when not given', async () => {
    const world = harness.world()
    const [a, b] = [await world.open(), await world.open()]
    expect(await a.head()).toBeNull()
    const s1 = richState(1)
    expect(await a.seed(s1)).toBe(true)
    expect(await b.head()).toEqual({ revision: 1, digest: stateDigest(s1) })
    // A writer passes the digest it computed from the change alone; it is what the whole state digests to.
    const s2 = withSplit(s1, 'b', 40)
    const d2 = digestAfter(stateDigest(s1), s1, s2, touchedRoutes(['b']))
    expect(d2).toBe(stateDigest(s2))
    await a.commit(s2, event(2), 1, touchedRoutes(['b']), d2)
    expect(await b.head()).toEqual({ revision: 2, digest: d2 })
    expect(stateDigest((await b.load())!)).toBe(d2)
    expect((await b.changesSince(1))!.digest).toBe(d2)
    // Two states under one revision have two digests: what tells them apart.
    const other = withSplit(s1, 'b', 10)
    other.revision = 2
    expect(stateDigest(other)).not.toBe(d2)
  })

  it('changesSince is null when the store cannot tell: empty, behind the asked revision, a seed or a whole-state commit in between', async () => {
    const store = await harness.world().open()
    expect(await store.changesSince(0)).toBeNull() // empty
    const s1 = richState(1)
    await store.commit(s1, event(1), 0)
    expect(await store.changesSince(0)).toBeNull() // the first write is whole
    expect(await store.changesSince(2)).toBeNull() // the store is behind
    const s2 = withSplit(s1, 'a', 10)
    await store.commit(s2, event(2), 1, touchedRoutes(['a']))
    expect(await store.changesSince(1)).toEqual({ revision: 2, upstreams: {}, routes: { a: s2.routes[0] }, flags: {}, rollouts: {}, digest: stateDigest(s2) })

    const s3 = withSplit(s2, 'b', 20)
    await store.commit(s3, event(3), 2) // whole: no touched names
    expect(await store.changesSince(1)).toBeNull()
    expect(await store.changesSince(2)).toBeNull()
    expect(isEmpty((await store.changesSince(3))!)).toBe(true)
    const s4 = withSplit(s3, 'c', 30)
    await store.commit(s4, event(4), 3, touchedRoutes(['c']))
    expect(applyDelta(s3, (await store.changesSince(3))!)).toEqual(s4)
    expect(await store.changesSince(2)).toBeNull()

    const s7 = { ...withSplit(s4, 'a', 70), revision: 7 }
    expect(await store.seed(s7)).toBe(true)
    expect(await store.changesSince(4)).toBeNull()
    expect(isEmpty((await store.changesSince(7))!)).toBe(true)
    const s8 = withSplit(s7, 'b', 80)
    await store.commit(s8, event(8), 7, touchedRoutes(['b']))
    expect(applyDelta(s7, (await store.changesSince(7))!)).toEqual(s8)
    expect(await store.load()).toEqual(s8)
  })

  it('changesSince is null for a gap longer than the change log', async () => {
    const store = await harness.world({ changelogCap: 3 }).open()
    const states = [richState(1)]
    await store.commit(states[0]!, event(1), 0)
    for (let r = 2; r <= 8; r++) {
      states.push(withSplit(states[r - 2]!, 'b', r))
      await store.commit(states[r - 1]!, event(r), r - 1, touchedRoutes(['b']))
    }
    for (const r of [5, 6, 7, 8]) expect(applyDelta(states[r - 1]!, (await store.changesSince(r))!)).toEqual(states[7])
    expect(await store.changesSince(4)).toBeNull() // 4 revisions behind, 3 logged
    expect(await store.changesSince(1)).toBeNull()
  })

  it('a deleted and re-created route moves to the end; a route that comes or goes changes the order even when the writer did not say so', async () => {
    const world = harness.world()
    const [a, b] = [await world.open(), await world.open()]
    const s1 = richState(1)
    await a.commit(s1, event(1), 0)
    const s2 = { ...s1, revision: 2, routes: s1.routes.filter((r) => r.name !== 'a') }
    await a.commit(s2, event(2), 1, touchedRoutes(['a'], true))
    const s3 = { ...s2, revision: 3, routes: [...s2.routes, { ...s1.routes[0]!, split: { u1: 5 } }] }
    await a.commit(s3, event(3), 2, touchedRoutes(['a'], true))
    const delta = (await b.changesSince(1))!
    expect(delta.order).toEqual(['b', 'c', 'a'])
    expect(delta.routes).toEqual({ a: s3.routes[2] })
    expect((await b.load())!.routes.map((r) => r.name)).toEqual(['b', 'c', 'a'])
    expect(applyDelta(s1, delta)).toEqual(s3)
    expect((await b.changesSince(2))!.order).toEqual(['b', 'c', 'a'])

    // A new route without `order: true`: the store still records (and hands out) the new order.
    const s4 = { ...s3, revision: 4, routes: [...s3.routes, { name: 'd', split: { u1: 1 } }] }
    expect(await a.commit(s4, event(4), 3, touchedRoutes(['d']))).toEqual({ ok: true, revision: 4 })
    expect((await b.load())!.routes.map((r) => r.name)).toEqual(['b', 'c', 'a', 'd'])
    expect((await b.changesSince(3))!.order).toEqual(['b', 'c', 'a', 'd'])
    // A split changes no order.
    const s5 = withSplit(s4, 'd', 2)
    await a.commit(s5, event(5), 4, touchedRoutes(['d']))
    expect((await b.changesSince(4))!.order).toBeUndefined()
    expect(await b.load()).toEqual(s5)
  })

  it('a touched name the next state lacks is deleted; untouched resources are left as they are', async () => {
    const store = await harness.world().open()
    const s1 = { ...richState(1), rollouts: { ro1: { step: 1 } } }
    await store.commit(s1, event(1), 0)
    const { u2: _u2, ...upstreams } = s1.upstreams
    const s2: State = { ...s1, revision: 2, upstreams, flags: {}, rollouts: {} }
    await store.commit(s2, event(2), 1, { ...noneTouched(), upstreams: ['u2'], flags: ['f1'], rollouts: ['ro1'] })
    expect(await store.load()).toEqual(s2)
    expect(await store.changesSince(1)).toEqual({ revision: 2, upstreams: { u2: null }, routes: {}, flags: { f1: null }, rollouts: { ro1: null }, digest: stateDigest(s2) })
  })

  it('changesSince asked out of order (an older revision after a newer one, or racing commits) is consistent every time', async () => {
    const world = harness.world()
    const [writer, reader] = [await world.open(), await world.open()]
    const states = new Map<number, State>()
    let current = richState(1)
    states.set(1, current)
    await writer.commit(current, event(1), 0)
    const write = async () => {
      const next = withSplit(current, pick(prng(current.revision), ['a', 'b', 'c']), current.revision)
      const prev = current
      current = next
      states.set(next.revision, next)
      expect(await writer.commit(next, event(next.revision), prev.revision, diffStates(prev, next))).toEqual({ ok: true, revision: next.revision })
    }
    for (let i = 0; i < 5; i++) await write()
    for (const r of [5, 2, 4, 1, 6, 3]) expect(applyDelta(states.get(r)!, (await reader.changesSince(r))!)).toEqual(current)
    // Reads racing writes: each answer is one snapshot, whichever revision it saw.
    for (let i = 0; i < 5; i++) {
      const asked = [1, current.revision - 1, current.revision]
      const [, ...deltas] = await Promise.all([write(), ...asked.map((r) => reader.changesSince(r))])
      deltas.forEach((delta, j) => expect(applyDelta(states.get(asked[j]!)!, delta!)).toEqual(states.get(delta!.revision)))
    }
  })
})

/** Freezes `value` and everything in it, so a mutation throws. */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key])
  }
  return value
}

function manyRoutes(n: number): State {
  return {
    revision: 1,
    upstreams: { u1: { targets: [] }, u2: { targets: [] } },
    routes: Array.from({ length: n }, (_, i) => ({ name: `r${i}`, match: { pathPrefix: `/r${i}/` }, split: { u1: 100 } })),
    flags: { f1: { enabled: true } },
    rollouts: { ro1: { step: 1 } },
  }
}

function emptyDelta(revision: number) {
  return { revision, upstreams: {}, routes: {}, flags: {}, rollouts: {} }
}

describe('applyDelta', () => {
  it('shares every resource and container the delta leaves alone, and never mutates its input', () => {
    const state = deepFreeze(manyRoutes(10_000))
    const before = structuredClone(state)
    const route = { name: 'r5000', split: { u1: 50, u2: 50 } }
    const next = applyDelta(state, { ...emptyDelta(2), routes: { r5000: route } })
    expect(next.revision).toBe(2)
    expect(next.routes).not.toBe(state.routes)
    expect(next.routes).toHaveLength(10_000)
    expect(next.routes[5000]).toBe(route)
    for (let i = 0; i < 10_000; i++) if (i !== 5000) expect(next.routes[i]).toBe(state.routes[i])
    expect(next.upstreams).toBe(state.upstreams)
    expect(next.flags).toBe(state.flags)
    expect(next.rollouts).toBe(state.rollouts)
    expect(state).toEqual(before)

    const flagged = applyDelta(state, { ...emptyDelta(3), flags: { f2: { enabled: false } }, upstreams: { u2: null } })
    expect(flagged.routes).toBe(state.routes)
    expect(flagged.flags).toEqual({ f1: { enabled: true }, f2: { enabled: false } })
    expect(flagged.flags.f1).toBe(state.flags.f1)
    expect(flagged.upstreams).toEqual({ u1: { targets: [] } })
    expect(flagged.upstreams.u1).toBe(state.upstreams.u1)
    expect(flagged.rollouts).toBe(state.rollouts)
    expect(applyDelta(state, { ...emptyDelta(4), rollouts: { ro1: null } }).rollouts).toEqual({})
    expect(state).toEqual(before)
  })

  it('without an order: replaces a route where it stands, removes one on null, appends an unknown one', () => {
    const state = deepFreeze(manyRoutes(4))
    const names = (s: State) => s.routes.map((r) => r.name)
    expect(names(applyDelta(state, { ...emptyDelta(2), routes: { r1: null } }))).toEqual(['r0', 'r2', 'r3'])
    expect(names(applyDelta(state, { ...emptyDelta(2), routes: { x: { name: 'x', split: { u1: 1 } } } }))).toEqual(['r0', 'r1', 'r2', 'r3', 'x'])
    expect(names(applyDelta(state, { ...emptyDelta(2), routes: { nope: null } }))).toEqual(['r0', 'r1', 'r2', 'r3'])
    const replaced = applyDelta(state, { ...emptyDelta(2), routes: { r2: { name: 'r2', split: { u2: 1 } } } })
    expect(replaced.routes[2]).toEqual({ name: 'r2', split: { u2: 1 } })
    expect(applyDelta(state, emptyDelta(2)).routes).toBe(state.routes)
  })

  it('many changed routes at once give what one change at a time gives', () => {
    const state = deepFreeze(manyRoutes(50))
    const routes: Record<string, { name: string; split: Record<string, number> } | null> = {}
    for (let i = 0; i < 60; i += 3) routes[`r${i}`] = i % 2 ? null : { name: `r${i}`, split: { u2: i + 1 } }
    const all = applyDelta(state, { ...emptyDelta(2), routes })
    let stepwise = state
    for (const [name, route] of Object.entries(routes)) stepwise = applyDelta(stepwise, { ...emptyDelta(2), routes: { [name]: route } })
    expect(all).toEqual(stepwise)
    expect(all.routes[1]).toBe(state.routes[1])
  })

  it('with an order: rebuilds the routes in it, sharing the unchanged ones; a name it cannot place is an error', () => {
    const state = deepFreeze(manyRoutes(3))
    const x = { name: 'x', split: { u1: 1 } }
    const next = applyDelta(state, { ...emptyDelta(2), routes: { x, r0: null }, order: ['r2', 'x', 'r1'] })
    expect(next.routes.map((r) => r.name)).toEqual(['r2', 'x', 'r1'])
    expect(next.routes[0]).toBe(state.routes[2])
    expect(next.routes[1]).toBe(x)
    expect(() => applyDelta(state, { ...emptyDelta(2), routes: {}, order: ['r0', 'ghost'] })).toThrow(/"ghost".*neither in the delta nor in the state/)
    expect(() => applyDelta(state, { ...emptyDelta(2), routes: { r0: null }, order: ['r0'] })).toThrow(/"r0".*deletes it/)
  })
})

describe('touchedOf, isEmpty, diffStates', () => {
  it('name what changed', () => {
    const a = manyRoutes(3)
    const b: State = structuredClone(a)
    b.revision = 2
    b.routes[1]!.split = { u2: 100 }
    b.upstreams.u3 = { targets: [] }
    delete b.flags.f1
    expect(diffStates(a, b)).toEqual({ upstreams: ['u3'], routes: ['r1'], flags: ['f1'], rollouts: [], order: false })
    expect(diffStates(a, structuredClone(a))).toEqual(noneTouched())
    const reordered = { ...a, routes: [a.routes[1]!, a.routes[0]!, a.routes[2]!] }
    expect(diffStates(a, reordered)).toEqual({ ...noneTouched(), order: true })
    expect(diffStates(a, { ...a, routes: a.routes.slice(1) })).toEqual({ ...noneTouched(), routes: ['r0'], order: true })

    const delta = { ...emptyDelta(5), routes: { r1: null }, flags: { f: { enabled: true } }, order: ['r0'] }
    expect(touchedOf(delta)).toEqual({ upstreams: [], routes: ['r1'], flags: ['f'], rollouts: [], order: true })
    expect(isEmpty(delta)).toBe(false)
    expect(isEmpty(emptyDelta(5))).toBe(true)
    expect(isEmpty({ ...emptyDelta(5), order: [] })).toBe(false)
  })
})
