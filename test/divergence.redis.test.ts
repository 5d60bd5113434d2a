/**
 * Never two states under one revision: a store that holds another state at the revision the
 * fleet applied (written behind the fleet's back here, as a write that reused a revision after a
 * failover would leave it) is detected by every instance from the digest beside the revision,
 * logged, counted, and healed: each applies the store's state. Real redis-server, real instances.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { State } from '../src/config/schema.js'
import { stateDigest } from '../src/state/digest.js'
import { storeKeys } from '../src/store/keys.js'
import { backend, startApp, twoVersions, type TestApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { memoryLogger } from './helpers/log.js'
import { startRedis, type RedisServer } from './helpers/redis.js'

let redis: RedisServer

beforeAll(async () => {
  redis = await startRedis()
})
afterAll(() => redis?.stop())

const FAST = { resyncMs: 100, heartbeatMs: 100 }

async function stateOf(app: TestApp): Promise<State> {
  return (await app.admin.get<State>('/api/state')).body
}

async function divergenceMetric(app: TestApp): Promise<number> {
  const text = (await app.admin.get<string>('/metrics')).body as unknown as string
  const line = String(text).split('\n').find((l) => l.startsWith('switchyard_state_divergences_total '))
  return Number(line?.split(' ')[1] ?? NaN)
}

describe('a store holding another state at the fleet\'s revision', () => {
  it('is detected by every instance from its digest, logged, counted, and every instance applies the store\'s state', async () => {
    const prefix = 'diverge-1'
    const config = { ...twoVersions(await backend('v1'), await backend('v2')), store: { type: 'redis' as const, url: redis.url, prefix } }
    const logs = [memoryLogger(), memoryLogger()]
    const [a, b] = [await startApp(config, { ...FAST, logger: logs[0]!.logger }), await startApp(config, { ...FAST, logger: logs[1]!.logger })]
    const written = await a.admin.put<{ revision: number }>('/api/routes/api/split', { v1: 50, v2: 50 })
    expect(written.status).toBe(200)
    const revision = written.body.revision
    await eventually(async () => expect((await stateOf(b)).revision).toBe(revision))
    const before = a.app.control.follower.digest
    expect(b.app.control.follower.digest).toBe(before)

    // Another state under the same revision, with its own (correct) digest, and no notice.
    const keys = storeKeys(prefix)
    const client = new Redis(redis.url)
    try {
      const other = structuredClone(await stateOf(a))
      other.routes[0]!.split = { v1: 0, v2: 100 }
      await client.hset(keys.routes, 'api', JSON.stringify(other.routes[0]))
      await client.set(keys.digest, stateDigest(other))
      expect(stateDigest(other)).not.toBe(before)

      for (const app of [a, b]) {
        await eventually(async () => {
          const s = await stateOf(app)
          expect(s.revision).toBe(revision)
          expect(s.routes[0]!.split).toEqual({ v1: 0, v2: 100 })
        }, { timeoutMs: 5_000 })
        expect(app.app.control.follower.digest).toBe(stateDigest(other))
        const answers = await Promise.all(Array.from({ length: 5 }, () => app.proxy('/x')))
        expect(answers.map((r) => r.backend)).toEqual(Array(5).fill('v2'))
        expect(app.app.control.follower.divergences).toBe(1)
        expect(await divergenceMetric(app)).toBe(1)
      }
      for (const log of logs) {
        const warned = log.find('the store holds another state at the revision this instance applied')
        expect(warned).toHaveLength(1)
        expect(warned[0]).toMatchObject({ revision, digest: before, storeDigest: stateDigest(other) })
      }
      // The fleet's registry shows one revision and one digest for both.
      await eventually(async () => {
        const listed = (await a.admin.get<{ instances: { id: string; appliedRevision: number; digest: string }[] }>('/api/instances')).body.instances
        expect(listed.map((i) => [i.appliedRevision, i.digest])).toEqual([
          [revision, stateDigest(other)],
          [revision, stateDigest(other)],
        ])
      })
      // Healed once, not again and again: the next checks find the digest they applied.
      await eventually(() => expect(logs.every((l) => l.find('applied state').length >= 2)).toBe(true))
      const next = await b.admin.put<{ revision: number }>('/api/routes/api/split', { v1: 100, v2: 0 })
      expect(next.body.revision).toBe(revision + 1)
      for (const app of [a, b]) await eventually(async () => expect((await stateOf(app)).routes[0]!.split).toEqual({ v1: 100, v2: 0 }))
      expect(await client.get(keys.digest)).toBe(a.app.control.follower.digest)
      expect(a.app.control.follower.divergences + b.app.control.follower.divergences).toBe(2)
    } finally {
      client.disconnect()
    }
  })
})
