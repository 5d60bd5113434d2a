/**
 * A fleet on Redis Sentinel, with real processes (helpers/sentinel.ts): a primary, a replica and
 * three sentinels (quorum 2, a node judged down after 500 ms). switchyard reaches it through
 * ioredis's Sentinel options passed as `store.options` (`sentinels`, `name`), never by a URL.
 *
 * 1. The primary is SIGKILLed under load through two instances: no proxied request fails,
 *    admin writes answer 503 until the sentinels promote the replica and are back within 10 s,
 *    and both instances and a third started afterwards hold one revision and one state.
 * 2. The stale-replica failover: the replica is paused (SIGSTOP) and its replication link cut
 *    (`CLIENT KILL TYPE replica` on the primary, so nothing is left in flight towards it); a
 *    split write is acknowledged; the primary is SIGKILLed and the replica resumed and promoted,
 *    without the write. The fleet puts it back (an instance that finds the store below its
 *    applied revision re-seeds it with its state), every instance keeps it in force, and the
 *    next write takes a revision no state had before.
 * 3. The same failover while the instances that hold the write cannot reach the promoted
 *    replica (ioredis `natMap` sends them through a TCP link that refuses), and an instance
 *    started meanwhile, knowing only the stale store, writes first. What holds is asserted;
 *    the fleet ending on one state is not, see the comment there.
 *
 * Every test brings its own deployment and stops it, so each starts from a clean primary.
 */
import { spawnSync } from 'node:child_process'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { State } from '../src/config/schema.js'
import { storeKeys } from '../src/store/keys.js'
import { backend, startApp, twoVersions, type TestApp, type TestConfig } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { startLoad, type Load } from './helpers/load.js'
import { startTcpLink, type TcpLink } from './helpers/tcp-link.js'
import { memoryLogger, type MemoryLog } from './helpers/log.js'
import { command, startSentinelDeployment, type SentinelDeployment } from './helpers/sentinel.js'
import { redisBin } from './setup/redis-available.js'

/** Sentinel as used here (REPLICAOF, SENTINEL REPLICAS) needs Redis 5 or later. */
function sentinelProblem(): string | null {
  const run = spawnSync(redisBin(), ['--version'], { encoding: 'utf8', timeout: 10_000 })
  const major = Number(/v=(\d+)\./.exec(run.stdout ?? '')?.[1] ?? 0)
  return major >= 5 ? null : `${redisBin()} is not Redis 5 or later (${(run.stdout ?? '').trim() || 'no version'})`
}
const problem = sentinelProblem()
if (problem !== null) process.stderr.write(`sentinel.redis.test.ts skipped: ${problem}\n`)

/** Short intervals so the fleet notices and converges in test time. */
const FAST = { resyncMs: 200, heartbeatMs: 100, instanceTtlMs: 2_000 }
/** What the issue allows between the primary's death and the first write that succeeds again. */
const WRITES_BACK_MS = 10_000

let prefixes = 0

async function deployment(): Promise<SentinelDeployment> {
  const d = await startSentinelDeployment()
  onTestFinished(() => d.stop())
  return d
}

/** Two versions v1/v2 behind route `api`, on the Sentinel-managed store under a fresh prefix. */
async function fleetConfig(d: SentinelDeployment): Promise<{ config: TestConfig; prefix: string }> {
  const prefix = `sentinel-${++prefixes}`
  const base = twoVersions(await backend('v1'), await backend('v2'))
  return { prefix, config: { ...base, store: { type: 'redis', prefix, options: { sentinels: d.addresses, name: d.name } } } }
}

async function stateOf(app: TestApp): Promise<State> {
  const res = await app.admin.get<State>('/api/state')
  expect(res.status).toBe(200)
  return res.body
}

function splitOf(state: State, route = 'api'): Record<string, number> | undefined {
  return state.routes.find((r) => r.name === route)?.split
}

/**
 * Resolves once every app's GET /api/state is at `revision` with `split` on route `api`, and
 * all of them are the same state; then each app's own proxy port answers 200, from `backendName`
 * when given.
 */
async function oneState(apps: TestApp[], revision: number, split: Record<string, number>, backendName: string | null, timeoutMs = 3_000): Promise<State> {
  const states = await eventually(async () => {
    const states = await Promise.all(apps.map(stateOf))
    for (const s of states) {
      expect(s.revision).toBe(revision)
      expect(splitOf(s)).toEqual(split)
    }
    return states
  }, { timeoutMs })
  // The whole body, not only revision and split: one revision, one content.
  for (const s of states.slice(1)) expect(s).toEqual(states[0])
  // And one digest, as each instance tells the fleet (GET /api/instances).
  const ids = apps.map((app) => app.app.control.instanceId)
  await eventually(async () => {
    const listed = (await apps[0]!.admin.get<{ instances: { id: string; appliedRevision: number; digest?: string }[] }>('/api/instances')).body.instances
    const ours = listed.filter((i) => ids.includes(i.id))
    expect(ours.map((i) => i.appliedRevision)).toEqual(ids.map(() => revision))
    expect(new Set(ours.map((i) => i.digest)).size).toBe(1)
    expect(ours[0]!.digest).toBe(apps[0]!.app.control.follower.digest)
  }, { timeoutMs })
  for (const app of apps) {
    const answers = await Promise.all(Array.from({ length: 5 }, () => app.proxy('/x')))
    expect(answers.map((r) => r.status)).toEqual(Array(5).fill(200))
    if (backendName !== null) expect(answers.map((r) => r.backend)).toEqual(Array(5).fill(backendName))
  }
  return states[0]!
}

/** Proxied GETs through each app, 4 at a time per app, until stopped; stopped after the test too. */
function loadThrough(apps: TestApp[]): Load[] {
  const loads = apps.map((app) => startLoad(app.app.proxyUrl, { workers: 4, path: () => '/load', maxMs: 30_000 }))
  onTestFinished(async () => {
    await Promise.all(loads.map((l) => l.stop()))
  })
  return loads
}

/** Stops the loads; every result that is not a 200 (a status, or a request's error message). */
async function failures(loads: Load[]): Promise<{ total: number; failed: (number | string)[] }> {
  const results = (await Promise.all(loads.map((l) => l.stop()))).flat()
  return { total: results.length, failed: results.filter((r) => r !== 200).slice(0, 20) }
}

/**
 * PUTs `split` on route `api` through `app` until it answers 200 (503 STORE_UNAVAILABLE while
 * the store has no primary); the answer and how long after `since` (performance.now()) it came.
 */
async function writeUntilAccepted(app: TestApp, split: Record<string, number>, since: number): Promise<{ revision: number; afterMs: number; refused: number }> {
  let refused = 0
  const otherErrors: string[] = []
  const res = await eventually(async () => {
    const r = await app.admin.put<{ revision: number }>('/api/routes/api/split', split)
    if (r.status === 503) refused++
    else if (r.status !== 200) otherErrors.push(`${r.status} ${JSON.stringify(r.body)}`)
    expect(r.status).toBe(200)
    return r
  }, { timeoutMs: WRITES_BACK_MS + 2_000, intervalMs: 50 })
  // While there is no primary a write answers "the store is unavailable", never another error.
  expect(otherErrors).toEqual([])
  return { revision: res.body.revision, afterMs: performance.now() - since, refused }
}

/** Waits until the replica has received everything the primary holds (its offset caught up). */
async function replicaInSync(d: SentinelDeployment): Promise<void> {
  await eventually(async () => {
    const primary = String(await command(d.primary.port, 'INFO', 'replication'))
    const replica = String(await command(d.replica.port, 'INFO', 'replication'))
    const at = Number(/master_repl_offset:(\d+)/.exec(primary)?.[1])
    expect(Number(/slave_repl_offset:(\d+)/.exec(replica)?.[1])).toBe(at)
  }, { timeoutMs: 3_000, intervalMs: 20 })
}

describe.skipIf(problem !== null)('a fleet on Redis Sentinel', () => {
  it('the primary SIGKILLed under load through two instances: 0 failed requests, writes back within 10 s, every instance on one state', async () => {
    const d = await deployment()
    const { config, prefix } = await fleetConfig(d)
    const a = await startApp(config, FAST)
    const b = await startApp(config, FAST)
    const before = await a.admin.put<{ revision: number }>('/api/routes/api/split', { v1: 50, v2: 50 })
    expect(before.status).toBe(200)
    await oneState([a, b], before.body.revision, { v1: 50, v2: 50 }, null)

    const loads = loadThrough([a, b])
    await eventually(() => expect(loads.every((l) => l.count() >= 50)).toBe(true))
    const killedAt = performance.now()
    await d.primary.kill('SIGKILL')
    const write = await writeUntilAccepted(a, { v2: 100 }, killedAt)
    expect(write.afterMs).toBeLessThan(WRITES_BACK_MS)
    expect(write.revision).toBe(before.body.revision + 1)
    // The write went to the promoted replica, which every sentinel now names.
    await d.waitForPrimary(d.replica.port, 5_000)
    // Load through both goes on a little after the failover, then none of it may have failed.
    const counted = loads.map((l) => l.count())
    await eventually(() => expect(loads.every((l, i) => l.count() >= counted[i]! + 50)).toBe(true))
    const { total, failed } = await failures(loads)
    expect(failed).toEqual([])
    expect(total).toBeGreaterThan(200)

    const c = await startApp(config, FAST)
    await oneState([a, b, c], write.revision, { v2: 100 }, 'v2')
    // The store itself, on its new primary, holds that revision.
    expect(Number(await command(d.replica.port, 'GET', storeKeys(prefix).revision))).toBe(write.revision)
    console.info(`sentinel failover: writes back ${Math.round(write.afterMs)} ms after SIGKILL (${write.refused} writes refused with 503), ${total} proxied requests, 0 failed`)
  })

  it('a failover to a replica that missed an acknowledged write: the fleet re-seeds it, the write stays in force everywhere, the next write takes a new revision', async () => {
    const d = await deployment()
    const { config, prefix } = await fleetConfig(d)
    const keys = storeKeys(prefix)
    const logs: MemoryLog[] = [memoryLogger('info'), memoryLogger('info')]
    const a = await startApp(config, { ...FAST, logger: logs[0]!.logger })
    const b = await startApp(config, { ...FAST, logger: logs[1]!.logger })
    const start = (await stateOf(a)).revision
    await oneState([a, b], start, { v1: 100, v2: 0 }, 'v1')
    await replicaInSync(d)
    const loads = loadThrough([a, b])
    await eventually(() => expect(loads.every((l) => l.count() >= 50)).toBe(true))

    // Cut the replica off: stop it, then have the primary drop its replication connection, so
    // nothing written from now on is even buffered towards it. It cannot reconnect while stopped.
    d.replica.pause()
    expect(await command(d.primary.port, 'CLIENT', 'KILL', 'TYPE', 'replica')).toBe(1)
    const acked = await a.admin.put<{ revision: number }>('/api/routes/api/split', { v2: 100 })
    expect(acked.status).toBe(200)
    expect(acked.body.revision).toBe(start + 1)
    await oneState([a, b], acked.body.revision, { v2: 100 }, 'v2')

    // The primary dies with the only copy of that write; the replica comes back without it.
    const killedAt = performance.now()
    await d.primary.kill('SIGKILL')
    d.replica.resume()
    expect(Number(await command(d.replica.port, 'GET', keys.revision))).toBe(start)
    await d.waitForPrimary(d.replica.port, 10_000)
    const promotedMs = performance.now() - killedAt

    // The fleet gives the promoted replica back the highest state it holds: the acknowledged
    // write is in force on every instance and in the store.
    await eventually(async () => expect(Number(await command(d.replica.port, 'GET', keys.revision))).toBe(acked.body.revision), { timeoutMs: 5_000 })
    await oneState([a, b], acked.body.revision, { v2: 100 }, 'v2')
    const reseeds = logs.flatMap((l) => l.find('re-seeded the store'))
    expect(reseeds.length).toBeGreaterThanOrEqual(1)
    expect(reseeds[0]).toMatchObject({ revision: acked.body.revision, found: start })

    // The next write, through the other instance, lands on a revision no state had before.
    const next = await writeUntilAccepted(b, { v1: 100 }, killedAt)
    expect(next.revision).toBe(acked.body.revision + 1)
    const c = await startApp(config, FAST)
    await oneState([a, b, c], next.revision, { v1: 100 }, 'v1')
    expect(Number(await command(d.replica.port, 'GET', keys.revision))).toBe(next.revision)
    // The store's own record of each revision agrees: one change per revision, none written twice.
    const events = (await a.admin.get<{ events: { revision: number }[] }>('/api/events?limit=50')).body.events.map((e) => e.revision)
    expect(new Set(events).size).toBe(events.length)

    const { total, failed } = await failures(loads)
    expect(failed).toEqual([])
    console.info(`stale-replica failover: promoted ${Math.round(promotedMs)} ms after SIGKILL, next write accepted ${Math.round(next.afterMs)} ms after it, ${total} proxied requests, 0 failed`)
  })

  it('a failover to a stale replica while the instances holding the write are cut off: an instance that knows only the stale store writes that revision again; the others see another digest at their revision and take the store state', async () => {
    const d = await deployment()
    const { config, prefix } = await fleetConfig(d)
    const keys = storeKeys(prefix)
    // A and B reach the replica (once promoted) only through their own link, blocked below.
    const links: TcpLink[] = [await startTcpLink(d.replica.port), await startTcpLink(d.replica.port)]
    onTestFinished(async () => {
      for (const l of links) await l.close()
    })
    const through = (link: TcpLink): TestConfig => {
      const store = config.store as { type: 'redis'; prefix: string; options: Record<string, unknown> }
      const natMap = { [`127.0.0.1:${d.replica.port}`]: { host: '127.0.0.1', port: link.port } }
      return { ...config, store: { ...store, options: { ...store.options, natMap } } }
    }
    const [logA, logB] = [memoryLogger(), memoryLogger()]
    const a = await startApp(through(links[0]!), { ...FAST, logger: logA.logger })
    const b = await startApp(through(links[1]!), { ...FAST, logger: logB.logger })
    const start = (await stateOf(a)).revision
    await replicaInSync(d)
    const loads = loadThrough([a, b])
    await eventually(() => expect(loads.every((l) => l.count() >= 50)).toBe(true))

    for (const l of links) for (const kind of ['cmd', 'sub', 'unknown'] as const) l.block(kind)
    d.replica.pause()
    expect(await command(d.primary.port, 'CLIENT', 'KILL', 'TYPE', 'replica')).toBe(1)
    const acked = await a.admin.put<{ revision: number }>('/api/routes/api/split', { v2: 100 })
    expect(acked.status).toBe(200)
    await oneState([a, b], acked.body.revision, { v2: 100 }, 'v2')
    await d.primary.kill('SIGKILL')
    d.replica.resume()
    await d.waitForPrimary(d.replica.port, 10_000)
    expect(Number(await command(d.replica.port, 'GET', keys.revision))).toBe(start)

    // C starts on the promoted, stale replica: it cannot know of the write and starts from the store's state.
    const c = await startApp(config, FAST)
    expect((await stateOf(c)).revision).toBe(start)
    const write = await c.admin.put<{ revision: number }>('/api/routes/api/split', { v1: 100 })
    expect(write.status).toBe(200)
    await oneState([c], write.body.revision, { v1: 100 }, 'v1')
    for (const l of links) for (const kind of ['cmd', 'sub', 'unknown'] as const) l.unblock(kind)
    await eventually(() => expect([a, b].map((app) => app.app.control.store.connected)).toEqual([true, true]), { timeoutMs: 5_000 })
    // C's write took revision start + 1, the revision A and B applied with the acknowledged split:
    // two states under one revision. A and B find the store at their revision with another
    // digest, log it, count it, and apply the store's state: one state on every instance.
    await oneState([a, b, c], write.body.revision, { v1: 100 }, 'v1', 10_000)
    for (const app of [a, b]) expect(app.app.control.follower.divergences).toBeGreaterThanOrEqual(1)
    expect(c.app.control.follower.divergences).toBe(0)
    for (const log of [logA, logB]) expect(log.find('the store holds another state at the revision this instance applied').length).toBeGreaterThanOrEqual(1)
    // The next write, from one of them, lands on a new revision everywhere.
    const after = await a.admin.put<{ revision: number }>('/api/routes/api/split', { v2: 100 })
    expect(after.status).toBe(200)
    expect(after.body.revision).toBe(write.body.revision + 1)
    await oneState([a, b, c], after.body.revision, { v2: 100 }, 'v2')

    const { total, failed } = await failures(loads)
    expect(failed).toEqual([])
    expect(total).toBeGreaterThan(100)
  })
})
