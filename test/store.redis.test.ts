/**
 * Redis-only behaviour: outages ("Redis down" / "Redis back"). A real redis-server
 * is SIGKILLed, restarted empty on the same port, or SIGSTOPped, and the store must fail
 * fast, report `connected`, and heal by itself.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFinished } from 'vitest'
import type { State } from '../src/config/schema.js'
import { SwitchyardError } from '../src/errors.js'
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
