/**
 * LeaseKeeper: one holder per fleet, on a real store. A crashed holder (it stops renewing) is
 * replaced within two lease periods; a holder that gives the lease up is replaced at once; and
 * at no sampled moment do two keepers both believe they hold it.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { LeaseKeeper } from '../src/control/lease.js'
import { silentLogger } from '../src/log.js'
import { MemoryBacking, MemoryStore } from '../src/store/memory.js'
import { RedisStore } from '../src/store/redis.js'
import type { Store } from '../src/store/store.js'
import { eventually } from './helpers/eventually.js'
import { startRedis, type RedisServer } from './helpers/redis.js'
import { startTcpLink } from './helpers/tcp-link.js'

let redis: RedisServer
let prefixes = 0
beforeAll(async () => {
  redis = await startRedis()
})
afterAll(() => redis?.stop())

const TTL = 300

async function stores(kind: 'memory' | 'redis', n: number): Promise<Store[]> {
  const backing = new MemoryBacking()
  const prefix = `lease-${++prefixes}`
  const out: Store[] = []
  for (let i = 0; i < n; i++) {
    const store = kind === 'memory' ? new MemoryStore(backing) : new RedisStore({ url: redis.url, prefix })
    await store.open()
    onTestFinished(() => store.close())
    out.push(store)
  }
  return out
}

function keeper(store: Store, holder: string, changes: string[] = [], ttlMs = TTL): LeaseKeeper {
  const k = new LeaseKeeper({ store, name: 'driver', holder, ttlMs, log: silentLogger, onChange: (held) => changes.push(`${holder}:${held}`) })
  onTestFinished(() => k.stop())
  return k
}

/** Samples both keepers every few ms until `until` holds; fails if both ever hold at once. */
async function neverBoth(a: LeaseKeeper, b: LeaseKeeper, until: () => boolean, timeoutMs: number): Promise<number> {
  const t0 = performance.now()
  while (!until()) {
    expect(a.held && b.held).toBe(false)
    if (performance.now() - t0 > timeoutMs) throw new Error(`not within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 5))
  }
  return performance.now() - t0
}

describe.each(['memory', 'redis'] as const)('LeaseKeeper on the %s store', (kind) => {
  it('one holder; a crashed holder is replaced within two lease periods, never overlapping', async () => {
    const [s1, s2] = await stores(kind, 2)
    const changes: string[] = []
    const a = keeper(s1!, 'A', changes)
    a.start()
    await eventually(() => expect(a.held).toBe(true))
    const b = keeper(s2!, 'B', changes)
    b.start()
    // B keeps trying while A renews: A stays the holder across several TTLs.
    const t0 = performance.now()
    while (performance.now() - t0 < 3 * TTL) {
      expect(a.held).toBe(true)
      expect(b.held).toBe(false)
      await new Promise((r) => setTimeout(r, 10))
    }
    // A crashes: it stops renewing without giving the lease up.
    await a.stop(false)
    const took = await neverBoth(a, b, () => b.held, 2 * TTL + 200)
    expect(took).toBeLessThanOrEqual(2 * TTL + 200)
    expect(changes).toEqual(['A:true', 'A:false', 'B:true'])
  })

  it('a holder that gives the lease up is replaced at the next attempt, long before the lease would expire', async () => {
    // A long TTL, so "at the next attempt" (every TTL/3) and "at expiry" are far apart.
    const ttl = 3_000
    const [s1, s2] = await stores(kind, 2)
    const a = keeper(s1!, 'A', [], ttl)
    a.start()
    await eventually(() => expect(a.held).toBe(true))
    const b = keeper(s2!, 'B', [], ttl)
    b.start()
    await a.stop(true)
    expect(await s2!.leaseHolder('driver')).toBeNull()
    const took = await neverBoth(a, b, () => b.held, ttl)
    expect(took).toBeLessThan(ttl / 3 + 1_000)
  })
})

it('a holder cut off from Redis (its connections cut and kept out) is replaced by another, never overlapping', async () => {
  const link = await startTcpLink(redis.port)
  onTestFinished(() => link.close())
  const prefix = `lease-${++prefixes}`
  const [s1, s2] = [new RedisStore({ url: link.url, prefix }), new RedisStore({ url: redis.url, prefix })]
  for (const s of [s1, s2]) {
    await s.open()
    onTestFinished(() => s.close())
  }
  const a = keeper(s1, 'A')
  a.start()
  await eventually(() => expect(a.held).toBe(true))
  const b = keeper(s2, 'B')
  b.start()
  link.block('cmd')
  link.cut()
  const took = await neverBoth(a, b, () => b.held, 2 * TTL + 200)
  expect(took).toBeLessThanOrEqual(2 * TTL + 200)
  expect(a.held).toBe(false)
})

it('a holder that cannot reach Redis stops believing it holds the lease within its TTL', async () => {
  const own = await startRedis()
  onTestFinished(() => own.stop())
  const store = new RedisStore({ url: own.url, prefix: 'lease-outage' })
  await store.open()
  onTestFinished(() => store.close())
  const a = keeper(store, 'A')
  a.start()
  await eventually(() => expect(a.held).toBe(true))
  await own.kill('SIGKILL')
  const t0 = performance.now()
  await eventually(() => expect(a.held).toBe(false), { timeoutMs: 2 * TTL })
  expect(performance.now() - t0).toBeLessThanOrEqual(TTL + 50)
})
