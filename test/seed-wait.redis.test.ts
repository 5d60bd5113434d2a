/**
 * The empty-Redis start race: Redis restarts empty under a running fleet, and a new instance
 * starts before the fleet has re-seeded it. Seeding at once from its file (revision 1), the new
 * instance would acknowledge writes on a state the fleet's re-seed (a higher revision) then
 * overwrites. With `store.seedWaitMs` it waits for that re-seed first. Real redis-server.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { State } from '../src/config/schema.js'
import { backend, startApp, twoVersions, type TestApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { memoryLogger } from './helpers/log.js'
import { startRedis, type RedisServer } from './helpers/redis.js'

let redis: RedisServer

beforeAll(async () => {
  redis = await startRedis()
})
afterAll(() => redis?.stop())

async function stateOf(app: TestApp): Promise<State> {
  return (await app.admin.get<State>('/api/state')).body
}

describe('an instance starting on an empty Redis under a running fleet', () => {
  it('waits for the fleet to re-seed it, so its first write builds on the fleet\'s state and is not overwritten', async () => {
    const config = { ...twoVersions(await backend('v1'), await backend('v2')), store: { type: 'redis' as const, url: redis.url, prefix: 'seed-wait-1' } }
    // The running instance hears of the empty store only by its periodic check (a flush sends no notice).
    const a = await startApp(config, { resyncMs: 500 })
    for (const split of [{ v1: 90, v2: 10 }, { v1: 80, v2: 20 }]) expect((await a.admin.put('/api/routes/api/split', split)).status).toBe(200)
    const fleetRevision = (await stateOf(a)).revision
    expect(fleetRevision).toBe(3)

    const client = new Redis(redis.url)
    try {
      await client.flushall() // Redis "restarted empty"
    } finally {
      client.disconnect()
    }
    const log = memoryLogger()
    const b = await startApp(config, { seedWaitMs: 3_000, logger: log.logger })
    expect(log.find('the store holds no state: waiting for a running fleet to re-seed it')).toHaveLength(1)
    expect(log.find('seeded an empty store with the config file')).toHaveLength(0)
    expect((await stateOf(b)).revision).toBe(fleetRevision)

    // B's first write builds on the fleet's state: a new revision, kept on every instance.
    const write = await b.admin.post<{ revision: number }>('/api/upstreams/v2/targets', { url: 'http://127.0.0.1:9', state: 'disabled' })
    expect(write.status).toBe(201)
    expect(write.body.revision).toBe(fleetRevision + 1)
    for (const app of [a, b]) {
      await eventually(async () => {
        const s = await stateOf(app)
        expect(s.revision).toBe(fleetRevision + 1)
        expect(s.routes[0]!.split).toEqual({ v1: 80, v2: 20 })
        expect(s.upstreams['v2']!.targets.map((t) => t.url)).toContain('http://127.0.0.1:9')
      })
    }
  })

  it('seeds from its file once the wait ends with the store still empty (a new store)', async () => {
    const config = { ...twoVersions(await backend('v1'), await backend('v2')), store: { type: 'redis' as const, url: redis.url, prefix: 'seed-wait-2' } }
    const log = memoryLogger()
    const a = await startApp(config, { seedWaitMs: 300, logger: log.logger })
    expect((await stateOf(a)).revision).toBe(1)
    expect(log.find('the store holds no state: waiting for a running fleet to re-seed it')).toHaveLength(1)
    expect(log.find('seeded an empty store with the config file')).toHaveLength(1)
  })
})
