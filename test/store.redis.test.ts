/**
 * Redis-only behaviour: outages ("Redis down" / "Redis back"). A real redis-server
 * is SIGKILLed, restarted empty on the same port, or SIGSTOPped, and the store must fail
 * fast, report `connected`, and heal by itself. Then the per-resource layout: conversion
 * from the old one-document layout, and what a write costs Redis at 10,000 routes.
 */
import { stateDigest } from '../src/state/digest.js'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFinished } from 'vitest'
import type { State } from '../src/config/schema.js'
import { SwitchyardError } from '../src/errors.js'
import { applyDelta, isEmpty, noneTouched, type Delta, type Touched } from '../src/state/delta.js'
import { storeKeys } from '../src/store/keys.js'
import { RedisStore } from '../src/store/redis.js'
import type { AuditEvent } from '../src/store/store.js'
import { eventually } from './helpers/eventually.js'
import { freePort, startRedis, type RedisServer } from './helpers/redis.js'

let server: RedisServer
let prefixes = 0

beforeAll(async () => {
  server = await startRedis()
})
afterAll(() => server.stop())
// Every test starts on a fresh, empty, running server, whatever the previous one did to it.
beforeEach(() => server.restart())

async function open(prefix: string): Promise<RedisStore> {
  const store = new RedisStore({ url: server.url, prefix })
  onTestFinished(() => store.close())
  await store.open()
  return store
}

/** Two instances of one fleet, with everything they hear recorded. */
async function fleet() {
  const prefix = `outage-${++prefixes}`
  const [a, b] = [await open(prefix), await open(prefix)]
  const changes = { a: [] as number[], b: [] as number[] }
  const connection: boolean[] = []
  a.onChange((r) => changes.a.push(r))
  b.onChange((r) => changes.b.push(r))
  a.onConnectionChange((c) => connection.push(c))
  return { a, b, changes, connection }
}

function state(revision: number): State {
  return { revision, upstreams: {}, routes: [], flags: {}, rollouts: {} }
}

function event(revision: number): AuditEvent {
  return { revision, at: new Date().toISOString(), actor: 'test', reason: null, action: 'split.put', target: 'routes/api/split', before: null, after: null }
}

/** Asserts `call` rejects with STORE_UNAVAILABLE, and returns how long that took (ms). */
async function unavailableWithin(call: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now()
  const err = await call().then(() => null, (e: unknown) => e)
  const elapsed = performance.now() - t0
  expect(err).toBeInstanceOf(SwitchyardError)
  expect((err as SwitchyardError).code).toBe('STORE_UNAVAILABLE')
  return elapsed
}

function handles(): Record<string, number> {
  const counts: Record<string, number> = { Timeout: 0, TCPSocketWrap: 0 }
  for (const kind of process.getActiveResourcesInfo()) if (kind in counts) counts[kind] = (counts[kind] ?? 0) + 1
  return counts
}

describe('redis store outages', () => {
  it('reports disconnected and fails every call with STORE_UNAVAILABLE within 2 s while Redis is down', async () => {
    const { a, connection } = await fleet()
    expect(await a.commit(state(1), event(1), 0)).toEqual({ ok: true, revision: 1 })
    await server.kill('SIGKILL')
    await eventually(() => expect(a.connected).toBe(false), { timeoutMs: 2000 })
    expect(connection).toEqual([false])
    const calls: Array<() => Promise<unknown>> = [
      () => a.load(),
      () => a.commit(state(2), event(2), 1),
      () => a.seed(state(2)),
      () => a.events(10),
      () => a.register({ id: 'i1', host: 'h', pid: 1, appliedRevision: 1, inflight: {} }, 1000),
      () => a.unregister('i1'),
      () => a.instances(),
    ]
    for (const call of calls) expect(await unavailableWithin(call)).toBeLessThan(2000)
  })

  it('reconnects by itself after Redis restarts empty, asks for a reload (-1), and accepts a re-seed', async () => {
    const { a, b, changes, connection } = await fleet()
    await a.commit(state(1), event(1), 0)
    await eventually(() => expect(changes.b).toEqual([1]))
    await server.kill('SIGKILL')
    await eventually(() => expect(a.connected).toBe(false), { timeoutMs: 2000 })
    await server.restart()

    await eventually(() => expect(a.connected).toBe(true), { timeoutMs: 5000 })
    expect(connection).toEqual([false, true])
    await eventually(() => expect(changes.a).toEqual([1, -1]), { timeoutMs: 5000 })
    await eventually(() => expect(changes.b).toEqual([1, -1]), { timeoutMs: 5000 })

    expect(await a.load()).toBeNull()
    expect(await a.commit(state(2), event(2), 1)).toEqual({ ok: false, reason: 'empty' })
    expect(await a.seed(state(1))).toBe(true)
    expect(await a.commit(state(2), event(2), 1)).toEqual({ ok: true, revision: 2 })
    // pub/sub works again: B was re-subscribed and hears of both writes.
    await eventually(() => expect(changes.b).toEqual([1, -1, 1, 2]), { timeoutMs: 1000 })
    expect((await b.load())?.revision).toBe(2)
  })

  it('fails a call within 2 s when Redis hangs, reports disconnected, and recovers when it answers again', async () => {
    const { a, changes } = await fleet()
    await a.commit(state(1), event(1), 0)
    server.pause()
    onTestFinished(() => server.resume())
    expect(await unavailableWithin(() => a.load())).toBeLessThan(2000)
    await eventually(() => expect(a.connected).toBe(false), { timeoutMs: 2000 })
    expect(await unavailableWithin(() => a.commit(state(2), event(2), 1))).toBeLessThan(100) // fails fast now
    server.resume()
    await eventually(() => expect(a.connected).toBe(true), { timeoutMs: 5000 })
    await eventually(() => expect(changes.a).toContain(-1), { timeoutMs: 5000 })
    expect((await a.load())?.revision).toBe(1) // same server, data kept
  })

  it('rejects open() with STORE_UNAVAILABLE within 5 s when Redis is unreachable, leaving nothing running', async () => {
    const store = new RedisStore({ url: `redis://127.0.0.1:${await freePort()}`, prefix: 'nowhere' })
    const elapsed = await unavailableWithin(() => store.open())
    expect(elapsed).toBeLessThanOrEqual(5000)
    expect(store.connected).toBe(false)
    await store.close()
    await eventually(() => expect(handles()).toEqual({ Timeout: 0, TCPSocketWrap: 0 }), { timeoutMs: 3000 })
  })

  it('closes promptly during an outage, leaving no socket or reconnect timer', async () => {
    const store = new RedisStore({ url: server.url, prefix: `outage-${++prefixes}` })
    await store.open()
    await server.kill('SIGKILL')
    await eventually(() => expect(store.connected).toBe(false), { timeoutMs: 2000 })
    const t0 = performance.now()
    await store.close()
    expect(performance.now() - t0).toBeLessThan(1000)
    await eventually(() => expect(handles()).toEqual({ Timeout: 0, TCPSocketWrap: 0 }), { timeoutMs: 3000 })
  })
})

// ---------------------------------------------------------------------------------------------
// The per-resource layout: conversion from the old one-document layout, and what a write costs.

function rawRedis(): Redis {
  const raw = new Redis(server.url)
  onTestFinished(() => raw.quit().then(() => undefined))
  return raw
}

/** A realistic state of `n` routes over 50 upstreams: a header rule, a 90/10 split, sticky hashing. */
function bigState(n: number, revision = 1): State {
  const upstreams: State['upstreams'] = {}
  for (let u = 0; u < 50; u++) upstreams[`up${u}`] = { targets: [{ id: `10.0.0.${u}:8080`, url: `http://10.0.0.${u}:8080`, state: 'active' }] }
  const routes: State['routes'] = Array.from({ length: n }, (_, i) => ({
    name: `svc${i}`,
    match: { pathPrefix: `/svc${i}/` },
    rules: [{ match: { header: { 'x-canary': '1' } }, upstream: `up${(i + 1) % 50}` }],
    split: { [`up${i % 50}`]: 90, [`up${(i + 1) % 50}`]: 10 },
    sticky: { by: 'header', name: 'x-user' },
  }))
  return { revision, upstreams, routes, flags: { beta: { enabled: true, percent: 10 } }, rollouts: {} }
}

/** `prev` at revision + 1 with route `name`'s split set to `weights`. */
function withSplit(prev: State, name: string, weights: Record<string, number>): State {
  return { ...prev, revision: prev.revision + 1, routes: prev.routes.map((r) => (r.name === name ? { ...r, split: weights } : r)) }
}

function onlyRoutes(routes: string[], order = false): Touched {
  return { ...noneTouched(), routes, order }
}

/** Bytes Redis has written to / read from all clients so far (INFO stats). */
async function netBytes(raw: Redis): Promise<{ out: number; in: number }> {
  const info = await raw.info('stats')
  const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(info)![1])
  return { out: field('total_net_output_bytes'), in: field('total_net_input_bytes') }
}

/** What `action` made Redis send and receive, less the INFO calls that measure it. */
async function bytesOf(raw: Redis, action: () => Promise<unknown>): Promise<{ out: number; in: number }> {
  // Two INFOs back to back: what measuring alone costs.
  const [a, b] = [await netBytes(raw), await netBytes(raw)]
  const before = await netBytes(raw)
  await action()
  const after = await netBytes(raw)
  return { out: after.out - before.out - (b.out - a.out), in: after.in - before.in - (b.in - a.in) }
}

describe('redis store layout: per resource, with a change log', () => {
  it('converts a store in the old one-document layout on open, keeping its revision, state and audit log', async () => {
    const prefix = `layout-${++prefixes}`
    const keys = storeKeys(prefix)
    const raw = rawRedis()
    const old = bigState(20, 7)
    // What an older version left: the document, its revision, an audit event.
    await raw.multi().set(keys.legacyState, JSON.stringify(old)).set(keys.revision, '7').lpush(keys.events, JSON.stringify(event(7))).exec()

    const store = await open(prefix)
    expect(await raw.exists(keys.legacyState)).toBe(0)
    expect(await raw.get(keys.revision)).toBe('7')
    expect(await raw.hlen(keys.routes)).toBe(20)
    expect(await raw.hlen(keys.upstreams)).toBe(50)
    expect(JSON.parse((await raw.get(keys.routeOrder))!)).toEqual(old.routes.map((r) => r.name))
    expect(await raw.lrange(keys.changelog, 0, -1)).toEqual(['7 *'])
    expect(await store.load()).toEqual(old)
    expect(await store.revision()).toBe(7)
    expect((await store.events(10)).map((e) => e.revision)).toEqual([7])

    // And it works on from there, one change at a time.
    const next = withSplit(old, 'svc3', { up0: 100 })
    expect(await store.commit(next, event(8), 7, onlyRoutes(['svc3']))).toEqual({ ok: true, revision: 8 })
    expect(applyDelta(old, (await store.changesSince(7))!)).toEqual(next)
    expect(await store.changesSince(6)).toBeNull()
    expect(await store.load()).toEqual(next)
  })

  it('converts a document an older version writes later, on the next read or change', async () => {
    const prefix = `layout-${++prefixes}`
    const keys = storeKeys(prefix)
    const raw = rawRedis()
    const store = await open(prefix)
    const s1 = bigState(5)
    await store.commit(s1, event(1), 0)
    // An older instance commits the way it always did: the whole document and the revision.
    const s2 = withSplit(s1, 'svc1', { up9: 100 })
    await raw.multi().set(keys.legacyState, JSON.stringify(s2)).set(keys.revision, '2').exec()
    expect(await store.changesSince(1)).toBeNull() // it cannot tell what changed: read it whole
    expect(await store.load()).toEqual(s2)
    expect(await raw.exists(keys.legacyState)).toBe(0)
    expect(isEmpty((await store.changesSince(2))!)).toBe(true)

    // Again, and this time a change on top comes first: it converts, then writes the change.
    const s3 = withSplit(s2, 'svc2', { up8: 100 })
    await raw.multi().set(keys.legacyState, JSON.stringify(s3)).set(keys.revision, '3').exec()
    const s4 = withSplit(s3, 'svc4', { up7: 100 })
    expect(await store.commit(s4, event(4), 3, onlyRoutes(['svc4']))).toEqual({ ok: true, revision: 4 })
    expect(await store.load()).toEqual(s4)
    expect(applyDelta(s3, (await store.changesSince(3))!)).toEqual(s4)
    expect(await store.changesSince(2)).toBeNull() // the conversion at 3 was a whole-state write
  })

  it('instances opening an old-layout store at once convert it once, all to the same state', async () => {
    const prefix = `layout-${++prefixes}`
    const keys = storeKeys(prefix)
    const raw = rawRedis()
    const old = bigState(300, 12)
    await raw.multi().set(keys.legacyState, JSON.stringify(old)).set(keys.revision, '12').exec()
    const stores = await Promise.all([open(prefix), open(prefix), open(prefix)])
    for (const store of stores) expect(await store.load()).toEqual(old)
    expect(await raw.lrange(keys.changelog, 0, -1)).toEqual(['12 *'])
  })

  it('at 10,000 routes a one-split change sends a few hundred bytes, not the ~2 MB state', async () => {
    const prefix = `layout-${++prefixes}`
    const keys = storeKeys(prefix)
    const raw = rawRedis()
    const [writer, b, c] = [await open(prefix), await open(prefix), await open(prefix)]
    const heard: number[] = []
    for (const s of [writer, b, c]) s.onChange((r) => heard.push(r))
    const sub = rawRedis()
    const messages: string[] = []
    sub.on('message', (_channel: string, message: string) => messages.push(message))
    await sub.subscribe(keys.changes)

    const s1 = bigState(10_000)
    expect(await writer.seed(s1)).toBe(true)
    await eventually(() => expect(heard).toEqual([1, 1, 1]))
    expect(messages).toEqual(['1 *'])
    const whole = JSON.stringify(s1).length
    expect(whole).toBeGreaterThan(1_500_000)

    // A first write and read load the scripts into Redis (EVAL sends their source once per server).
    const s2 = withSplit(s1, 'svc0', { up0: 50, up1: 50 })
    await writer.commit(s2, event(2), 1, onlyRoutes(['svc0']))
    await writer.changesSince(1)
    await eventually(() => expect(messages).toHaveLength(2))

    const s3 = withSplit(s2, 'svc9999', { up49: 50, up0: 50 })
    const commit = await bytesOf(raw, async () => {
      expect(await writer.commit(s3, event(3), 2, onlyRoutes(['svc9999']))).toEqual({ ok: true, revision: 3 })
      await eventually(() => expect(messages).toHaveLength(3)) // delivered to every subscriber
    })
    // The notice, then the change itself (small enough to travel with it).
    const [notice, change] = messages[2]!.split('\n')
    expect(notice).toBe('3 {"upstreams":[],"routes":["svc9999"],"flags":[],"rollouts":[],"order":false}')
    expect(JSON.parse(change!)).toEqual({ revision: 3, upstreams: {}, routes: { svc9999: s3.routes[9999] }, flags: {}, rollouts: {}, digest: stateDigest(s3) })
    // 4 subscribers (3 instances and this test's) get the message, the writer its reply.
    expect(commit.out).toBeLessThanOrEqual(2048 * 4)
    expect(commit.in).toBeLessThanOrEqual(2048)

    for (const follower of [b, c]) {
      let delta: Delta | null = null
      const read = await bytesOf(raw, async () => (delta = await follower.changesSince(2)))
      expect(delta).toEqual({ revision: 3, upstreams: {}, routes: { svc9999: s3.routes[9999] }, flags: {}, rollouts: {}, digest: stateDigest(s3) })
      expect(read.out).toBeLessThanOrEqual(2048)
      expect(read.in).toBeLessThanOrEqual(2048)
    }
    // The measure itself is sound: a whole read does cost the state.
    const full = await bytesOf(raw, () => b.load())
    expect(full.out).toBeGreaterThan(whole)
  })

  it('at 10,000 routes, big changes in one commit (thousands of routes changed, deleted, added) read back exactly', async () => {
    const prefix = `layout-${++prefixes}`
    const [writer, reader] = [await open(prefix), await open(prefix)]
    const s1 = bigState(10_000)
    await writer.seed(s1)
    // 2,500 splits: more names than one HMGET batch.
    const changed = new Set(Array.from({ length: 2_500 }, (_, i) => `svc${i * 4}`))
    const s2: State = { ...s1, revision: 2, routes: s1.routes.map((r) => (changed.has(r.name) ? { ...r, split: { up1: 100 } } : r)) }
    await writer.commit(s2, event(2), 1, onlyRoutes([...changed]))
    // 1,500 deleted and 1,200 added in the middle: batched HDEL and HSET, and a new order.
    const dropped = new Set(Array.from({ length: 1_500 }, (_, i) => `svc${i * 5 + 1}`))
    const added = Array.from({ length: 1_200 }, (_, i) => ({ name: `new${i}`, match: { pathPrefix: `/new${i}/` }, split: { up2: 100 } }))
    const kept = s2.routes.filter((r) => !dropped.has(r.name))
    const s3: State = { ...s2, revision: 3, routes: [...kept.slice(0, 5_000), ...added, ...kept.slice(5_000)] }
    await writer.commit(s3, event(3), 2, onlyRoutes([...dropped, ...added.map((r) => r.name)], true))
    expect(await reader.load()).toEqual(s3)
    const fromOne = (await reader.changesSince(1))!
    expect(new Set(Object.keys(fromOne.routes))).toEqual(new Set([...changed, ...dropped, ...added.map((r) => r.name)]))
    expect(applyDelta(s1, fromOne)).toEqual(s3)
    expect(applyDelta(s2, (await reader.changesSince(2))!)).toEqual(s3)
  })
})
