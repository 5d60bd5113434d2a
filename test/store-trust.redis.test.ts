/**
 * Nothing read from the store is applied unchecked (real redis-server, two real instances).
 *
 * The store is shared: whoever reaches Redis (another instance, an older version, redis-cli)
 * can write it. States and changes read from it were compiled without the checks an admin
 * write gets, so a state no writer would accept (two routes with the same match, a target url
 * with credentials, a CA path naming a FIFO...) went live on every instance. Now each whole
 * state, each change fetched with `changesSince` and each change sent along with a notice
 * passes schema and semantic validation first; one that fails is applied by no instance: each
 * keeps its last good state, logs it with the path and the reason, counts it, and is reported
 * a laggard until a good state comes.
 */
import { execFileSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import type { RouteSpec, State } from '../src/config/schema.js'
import { storeKeys } from '../src/store/keys.js'
import { RedisStore } from '../src/store/redis.js'
import { backend, startApp, twoVersions, type TestApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { memoryLogger, type MemoryLog } from './helpers/log.js'
import { readState, writeState } from './helpers/raw-state.js'
import { startRedis, type RedisServer } from './helpers/redis.js'

let redis: RedisServer
let prefixes = 0
let dir: string

beforeAll(async () => {
  redis = await startRedis()
  dir = await mkdtemp(join(tmpdir(), 'sy-store-trust-'))
})
afterAll(async () => {
  await redis?.stop()
  await rm(dir, { recursive: true, force: true })
})

interface Fleet {
  apps: TestApp[]
  logs: MemoryLog[]
  raw: Redis
  prefix: string
  /** the state both instances started on (revision 1): v1 100, v2 0 */
  first: State
}

/** Instances A and B on one Redis, both at revision 1. */
async function fleet(): Promise<Fleet> {
  const prefix = `trust-${++prefixes}`
  const config = { ...twoVersions(await backend('v1'), await backend('v2')), store: { type: 'redis' as const, url: redis.url, prefix } }
  const opts = { resyncMs: 100, heartbeatMs: 100, behindAlertMs: 300 }
  const logs = [memoryLogger(), memoryLogger()]
  const apps = [await startApp(config, { ...opts, logger: logs[0]!.logger }), await startApp(config, { ...opts, logger: logs[1]!.logger })]
  const { Redis } = await import('ioredis')
  const raw = new Redis(redis.url)
  onTestFinished(() => raw.quit().then(() => undefined))
  await eventually(async () => expect(await revisions(apps)).toEqual([1, 1]))
  return { apps, logs, raw, prefix, first: (await readState(raw, prefix))! }
}

async function revisions(apps: TestApp[]): Promise<number[]> {
  return Promise.all(apps.map(async (a) => (await a.admin.get<State>('/api/state')).body.revision))
}

const failures = (apps: TestApp[]) => apps.map((a) => a.app.control.follower.applyFailures)

/**
 * Neither instance applies `revision`: both stay at `applied`, route as before, count it
 * (`failures` each), log it once with `reason` (the validation's path and message), and are
 * listed as laggards.
 */
async function refusedByAll(f: Fleet, revision: number, applied: number, failuresEach: number, reason: string | RegExp): Promise<void> {
  await eventually(() => expect(failures(f.apps)).toEqual([failuresEach, failuresEach]), { timeoutMs: 3_000 })
  expect(await revisions(f.apps)).toEqual([applied, applied])
  for (const [i, log] of f.logs.entries()) {
    const lines = log.find('cannot apply the state').filter((l) => l.revision === revision)
    expect(lines, `instance ${i}`).toHaveLength(1) // once per revision, not per retry
    const err = lines[0]!.err as { message: string; code?: string }
    expect(err.message).toMatch(/^the store's (state does not pass validation|change is inconsistent): /)
    expect(err.message).toMatch(reason)
  }
  await eventually(async () => {
    const { instances } = (await f.apps[1]!.admin.get('/api/instances')).body as { instances: { appliedRevision: number; laggard: boolean }[] }
    expect(instances).toHaveLength(2)
    for (const i of instances) expect(i).toMatchObject({ appliedRevision: applied, laggard: true })
  }, { timeoutMs: 3_000 })
  for (const a of f.apps) expect(a.app.control.follower.behindMs()).toBeGreaterThan(0)
  const metrics = await (await fetch(`${f.apps[0]!.app.adminUrl}/metrics`)).text()
  expect(metrics).toMatch(new RegExp(`^switchyard_state_apply_failures_total ${failuresEach}$`, 'm'))
}

/** Both instances applied `revision`, route to `backendName`, and are no laggards. */
async function appliedByAll(f: Fleet, revision: number, backendName: string): Promise<void> {
  await eventually(async () => expect(await revisions(f.apps)).toEqual([revision, revision]), { timeoutMs: 3_000 })
  for (const a of f.apps) expect((await a.proxy('/x')).backend).toBe(backendName)
  await eventually(async () => {
    const { instances } = (await f.apps[0]!.admin.get('/api/instances')).body as { instances: { appliedRevision: number; laggard: boolean }[] }
    for (const i of instances) expect(i).toMatchObject({ appliedRevision: revision, laggard: false })
  }, { timeoutMs: 3_000 })
}

const api = (s: State): RouteSpec => s.routes.find((r) => r.name === 'api')!

describe('whole states written to Redis behind the writers’ back', () => {
  it('a state with an unknown upstream in a split is applied by no instance (both report it); a good state heals both', async () => {
    const f = await fleet()
    const bad: State = { ...f.first, revision: 2, routes: [{ ...api(f.first), split: { v1: 50, v9: 50 } }] }
    await writeState(f.raw, f.prefix, bad, { publish: true })
    await refusedByAll(f, 2, 1, 1, /routes\[0\]\.split\.v9: unknown upstream "v9"/)
    expect((await f.apps[0]!.proxy('/x')).backend).toBe('v1')
    for (const log of f.logs) {
      await eventually(() => expect(log.find('behind the store')[0]).toMatchObject({ level: 'warn', appliedRevision: 1, storeRevision: 2 }))
    }

    const good: State = { ...f.first, revision: 3, routes: [{ ...api(f.first), split: { v1: 0, v2: 100 } }] }
    await writeState(f.raw, f.prefix, good, { publish: true })
    await appliedByAll(f, 3, 'v2')
    for (const log of f.logs) await eventually(() => expect(log.find('caught up')).toHaveLength(1))
  })

  it('an admin write through either instance replaces a refused state: the fleet is healed through the API', async () => {
    const f = await fleet()
    await writeState(f.raw, f.prefix, { ...f.first, revision: 2, routes: [{ ...api(f.first), split: { v9: 1 } }] }, { publish: true })
    await refusedByAll(f, 2, 1, 1, /routes\[0\]\.split\.v9: unknown upstream "v9"/)
    const res = await f.apps[1]!.admin.put('/api/routes/api/split', { v1: 0, v2: 100 })
    expect([res.status, res.body.revision]).toEqual([200, 3])
    await appliedByAll(f, 3, 'v2')
    // Built on the last good state (revision 1), with the write's change: nothing of the refused one is left.
    expect((await readState(f.raw, f.prefix))!.routes).toEqual([{ ...api(f.first), split: { v1: 0, v2: 100 } }])
  })

  it('states that would compile but fail validation or the schema are refused too, each with its path', async () => {
    const f = await fleet()
    const fifo = join(dir, `ca-${prefixes}.fifo`)
    execFileSync('mkfifo', [fifo])
    const route = api(f.first)
    const v1 = f.first.upstreams['v1']!
    const cases: [string, (s: State) => State, RegExp][] = [
      [
        'a second route with the same match',
        (s) => ({ ...s, routes: [route, { ...route, name: 'shadowed' }] }),
        /routes\[1\]\.match: same match as routes\[0\] \("api"\)/,
      ],
      [
        'a target url with credentials',
        (s) => ({ ...s, upstreams: { ...s.upstreams, v1: { ...v1, targets: [{ ...v1.targets[0]!, url: v1.targets[0]!.url.replace('//', '//user:pw@') }] } } }),
        /upstreams\.v1\.targets\[0\]\.url: must not contain credentials/,
      ],
      ['a negative weight', (s) => ({ ...s, routes: [{ ...route, split: { v1: 100, v2: -5 } }] }), /routes\[0\]\.split\.v2: /],
      ['a weight that is a string', (s) => ({ ...s, routes: [{ ...route, split: { v1: '100' as unknown as number } }] }), /routes\[0\]\.split\.v1: /],
      ['a sticky header without its name', (s) => ({ ...s, routes: [{ ...route, sticky: { by: 'header' } }] }), /routes\[0\]\.sticky\.name: is required/],
      ['a regex RE2 cannot run', (s) => ({ ...s, routes: [{ ...route, rules: [{ match: { header: { 'x-v': { regex: '^(?=a)' } } }, upstream: 'v2' }] }] }), /routes\[0\]\.rules\[0\]\.match\.header\.x-v\.regex: not supported/],
      ['a tls.ca naming a FIFO', (s) => ({ ...s, upstreams: { ...s.upstreams, v1: { ...v1, tls: { ca: fifo } } } }), new RegExp(`upstreams\\.v1\\.tls\\.ca: ${fifo}: not a regular file \\(a FIFO\\)`)],
      ['a flag bucketed by two keys', (s) => ({ ...s, flags: { f: { enabled: true, percent: 50, by: { header: 'x-u', cookie: 'u' } } } }), /flags\.f\.by: must name exactly one of/],
    ]
    let revision = 1
    for (const [i, [what, change, reason]] of cases.entries()) {
      revision++
      await writeState(f.raw, f.prefix, { ...change(f.first), revision }, { publish: true })
      try {
        await refusedByAll(f, revision, 1, i + 1, reason)
        // A state any instance refuses can be replaced by a write; one refused for this host's file cannot (others may have applied it).
        for (const a of f.apps) expect(a.app.control.follower.refusedRevision).toBe(what.includes('FIFO') ? undefined : revision)
      } catch (err) {
        throw new Error(`${what}: ${(err as Error).message}`, { cause: err })
      }
    }
    await writeState(f.raw, f.prefix, { ...f.first, revision: revision + 1 }, { publish: true })
    await appliedByAll(f, revision + 1, 'v1')
  })
})

describe('changes (incremental) written to Redis behind the writers’ back', () => {
  /** A store of the fleet's prefix: its commits write and announce only the touched resources, unchecked, as a rogue writer would. */
  async function rogue(f: Fleet): Promise<RedisStore> {
    const store = new RedisStore({ url: redis.url, prefix: f.prefix })
    await store.open()
    onTestFinished(() => store.close())
    return store
  }

  const event = (revision: number) => ({ revision, at: new Date().toISOString(), actor: 'rogue', reason: null, action: 'test', target: 'test', before: null, after: null })
  const touched = (t: { upstreams?: string[]; routes?: string[] }) => ({ upstreams: t.upstreams ?? [], routes: t.routes ?? [], flags: [], rollouts: [], order: false })

  it('a change that fails validation (sent with its notice and fetched with changesSince) is applied by no instance; a good change heals both', async () => {
    const f = await fleet()
    const store = await rogue(f)
    const route = api(f.first)

    // A route change: sticky by header without a header name (it would compile).
    const r2: State = { ...f.first, revision: 2, routes: [{ ...route, split: { v1: 0, v2: 100 }, sticky: { by: 'header' } }] }
    expect(await store.commit(r2, event(2), 1, touched({ routes: ['api'] }))).toEqual({ ok: true, revision: 2 })
    await refusedByAll(f, 2, 1, 1, /routes\[0\]\.sticky\.name: is required when by is "header"/)
    expect((await f.apps[1]!.proxy('/x')).backend).toBe('v1')

    // An upstream change on top: a target url with a path (it would compile too).
    const v2 = r2.upstreams['v2']!
    const r3: State = { ...r2, revision: 3, upstreams: { ...r2.upstreams, v2: { ...v2, targets: [{ ...v2.targets[0]!, url: `${v2.targets[0]!.url}/admin` }] } } }
    expect(await store.commit(r3, event(3), 2, touched({ upstreams: ['v2'] }))).toEqual({ ok: true, revision: 3 })
    // The instances are at 1: they fetch 1 → 3, which holds both faults (both are told).
    await refusedByAll(f, 3, 1, 2, /upstreams\.v2\.targets\[0\]\.url: must not have a path/)

    // Both fixed by the next change: every instance applies it, from the changes alone.
    const r4: State = { ...f.first, revision: 4, routes: [{ ...route, split: { v1: 0, v2: 100 } }] }
    expect(await store.commit(r4, event(4), 3, touched({ routes: ['api'], upstreams: ['v2'] }))).toEqual({ ok: true, revision: 4 })
    await appliedByAll(f, 4, 'v2')
    for (const log of f.logs) expect(log.find('applied state').filter((l) => l.revision === 4)).toEqual([expect.objectContaining({ whole: false })])
  })

  it('a change whose resource breaks the schema, or whose route is stored under another name, is refused', async () => {
    const f = await fleet()
    const store = await rogue(f)
    const r2: State = { ...f.first, revision: 2, routes: [{ ...api(f.first), split: { v1: 1, v2: 'all' as unknown as number } }] }
    await store.commit(r2, event(2), 1, touched({ routes: ['api'] }))
    await refusedByAll(f, 2, 1, 1, /routes\[0\]\.split\.v2: /)

    // Stored under `api`, the record says `other` (raw commands, as the commit script would log it):
    // a table that keys routes by name would lose track of it.
    const change = JSON.stringify(touched({ routes: ['api'] }))
    const keys = storeKeys(f.prefix)
    await f.raw
      .multi()
      .hset(keys.routes, 'api', JSON.stringify({ ...api(f.first), name: 'other' }))
      .set(keys.revision, '3')
      .lpush(keys.changelog, `3 ${change}`)
      .publish(keys.changes, `3 ${change}`)
      .exec()
    await refusedByAll(f, 3, 1, 2, /routes\[0\]\.name: is "other", stored as route "api"/)
  })
})
