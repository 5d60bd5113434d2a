/**
 * Changes, not documents: a follower on Redis fetches only what changed, and ends on the
 * writer's state whatever happens to the notices — missed (its subscriber cut), out of order,
 * or naming revisions that do not exist. Real redis-server, real instances; every instance is
 * checked after each fault (its applied state, its own proxy port's answers).
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import type { State } from '../src/config/schema.js'
import { backend, startApp, twoVersions, type TestApp, type TestConfig } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { memoryLogger, type MemoryLog } from './helpers/log.js'
import { startRedis, type RedisServer } from './helpers/redis.js'
import { startTcpLink } from './helpers/tcp-link.js'
import { CHANGES, LOAD } from '../src/store/redis-scripts.js'

let redis: RedisServer
let prefixes = 0

beforeAll(async () => {
  redis = await startRedis()
})
afterAll(() => redis?.stop())

async function config(): Promise<{ config: TestConfig; prefix: string }> {
  const prefix = `changes-${++prefixes}`
  const base = twoVersions(await backend('v1'), await backend('v2'), {
    routes: Array.from({ length: 20 }, (_, i) => ({ name: `r${i}`, match: { pathPrefix: `/r${i}/` }, split: { v1: 100, v2: 0 } })),
  })
  return { prefix, config: { ...base, store: { type: 'redis', url: redis.url, prefix } } }
}

async function state(app: TestApp): Promise<State> {
  return (await app.admin.get<State>('/api/state')).body
}

/** B has A's state exactly, and its own proxy port routes every route by it. */
async function sameState(a: TestApp, b: TestApp): Promise<void> {
  await eventually(async () => expect(await state(b)).toEqual(await state(a)), { timeoutMs: 3_000 })
  const s = await state(a)
  for (const route of s.routes) {
    const expected = (route.split.v2 ?? 0) === 100 ? 'v2' : (route.split.v1 ?? 0) === 100 ? 'v1' : undefined
    if (expected === undefined) continue
    for (const app of [a, b]) expect((await app.proxy(`${route.match!.pathPrefix}x`)).backend).toBe(expected)
  }
}

async function split(app: TestApp, route: string, to: 'v1' | 'v2'): Promise<number> {
  const r = await app.admin.put(`/api/routes/${route}/split`, to === 'v1' ? { v1: 100 } : { v2: 100 })
  expect(r.status).toBe(200)
  return r.body.revision as number
}

/** The revisions this instance applied, and how (whole compile or only the changes). */
function applies(log: MemoryLog): { revision: number; whole: boolean }[] {
  return log.find('applied state').map((l) => ({ revision: l.revision as number, whole: l.whole as boolean }))
}

describe('a Redis follower fetches and applies only the changes', () => {
  it('follows writes one change at a time: no whole reload after start', async () => {
    const { config: c } = await config()
    const a = await startApp(c)
    const logB = memoryLogger()
    const b = await startApp(c, { logger: logB.logger })
    for (let i = 0; i < 5; i++) await split(a, `r${i}`, 'v2')
    await sameState(a, b)
    expect(applies(logB)).toEqual([
      { revision: 1, whole: true },
      ...[2, 3, 4, 5, 6].map((revision) => ({ revision, whole: false })),
    ])
  })

  it('misses messages (its subscriber cut): catches up from the changes, on the same state as the writer', async () => {
    const l = await startTcpLink(redis.port)
    onTestFinished(() => l.close())
    const { config: c, prefix } = await config()
    const a = await startApp(c, { resyncMs: 100 })
    const logB = memoryLogger()
    const b = await startApp({ ...c, store: { type: 'redis', url: l.url, prefix } }, { resyncMs: 100, logger: logB.logger })
    await sameState(a, b)

    l.block('sub')
    l.cut(['sub'])
    await eventually(() => expect(l.open('sub')).toBe(0))
    // B hears nothing of these; its periodic re-read finds the store ahead and asks for the changes.
    for (let i = 0; i < 6; i++) await split(a, `r${i}`, i % 2 === 0 ? 'v2' : 'v1')
    await sameState(a, b)
    l.unblock('sub')
    await split(a, 'r10', 'v2')
    await sameState(a, b)
    expect(applies(logB).filter((x) => x.whole)).toEqual([{ revision: 1, whole: true }])
  })

  it('hears notices out of order, or of revisions that do not exist: never goes back, ends on the writer state', async () => {
    const { config: c, prefix } = await config()
    const a = await startApp(c, { resyncMs: 100 })
    const b = await startApp(c, { resyncMs: 100 })
    const pub = new Redis(redis.url)
    onTestFinished(() => void pub.quit())
    const channel = `{${prefix}}:changes`
    const seen: number[] = []
    b.app.control.follower.onApplied((s) => seen.push(s.revision))

    const r2 = await split(a, 'r1', 'v2')
    // Stale and future notices between real writes: the follower asks the store, not the notice.
    await pub.publish(channel, `1 {"routes":["r1"]}`)
    await pub.publish(channel, `${r2 + 50} {"routes":["r2"]}`)
    await pub.publish(channel, 'garbage')
    const r3 = await split(a, 'r2', 'v2')
    await pub.publish(channel, `${r2}`)
    await split(a, 'r3', 'v2')
    await sameState(a, b)
    expect((await state(b)).revision).toBe(r3 + 1)
    // Applied revisions only ever grow.
    expect(seen).toEqual([...seen].sort((x, y) => x - y))
    expect(new Set(seen).size).toBe(seen.length)
  })

  it('a follower one revision behind applies a published change from its message alone: no read of the store', async () => {
    // Periodic re-reads off: they could cross a write and ask for the changes themselves.
    const { config: c } = await config()
    const a = await startApp(c, { resyncMs: 600_000 })
    const logB = memoryLogger()
    const b = await startApp(c, { resyncMs: 600_000, logger: logB.logger })
    await sameState(a, b)

    // Every command Redis runs, in order; a marker echoed at the end says all were seen.
    const monitor = await new Redis(redis.url).monitor()
    onTestFinished(() => void monitor.disconnect())
    const commands: string[][] = []
    monitor.on('monitor', (_time: string, args: string[]) => commands.push(args))
    const marker = new Redis(redis.url)
    onTestFinished(() => void marker.quit())
    const seen = async (): Promise<void> => {
      const word = `marker-${commands.length}-${Math.random()}`
      await marker.echo(word)
      await eventually(() => expect(commands.some((args) => args[1] === word)).toBe(true))
    }
    await seen()
    const from = commands.length

    for (let i = 0; i < 5; i++) await split(a, `r${i}`, 'v2')
    await sameState(a, b)
    await seen()
    const scripts = commands.slice(from).filter((args) => args[0]!.toLowerCase() === 'evalsha').map((args) => args[1])
    // Neither the follower nor the writer read the changes or the state: the messages carried them.
    expect(scripts.filter((sha) => sha === CHANGES.sha || sha === LOAD.sha)).toEqual([])
    expect(applies(logB).slice(1)).toEqual([2, 3, 4, 5, 6].map((revision) => ({ revision, whole: false })))
  })

  it('published changes that do not follow, are stale or do not parse: the follower asks the store and ends on the writer state', async () => {
    const { config: c, prefix } = await config()
    const a = await startApp(c, { resyncMs: 100 })
    const b = await startApp(c, { resyncMs: 100 })
    const pub = new Redis(redis.url)
    onTestFinished(() => void pub.quit())
    const channel = `{${prefix}}:changes`
    const seen: number[] = []
    b.app.control.follower.onApplied((s) => seen.push(s.revision))
    const forged = (revision: number, route: string) =>
      `${revision} {"upstreams":[],"routes":["${route}"],"flags":[],"rollouts":[],"order":false}\n` +
      JSON.stringify({ revision, upstreams: {}, routes: { [route]: { name: route, match: { pathPrefix: `/${route}/` }, split: { v1: 1, v2: 99 } } }, flags: {}, rollouts: {} })

    const r2 = await split(a, 'r1', 'v2')
    await sameState(a, b)
    // Stale (below the applied revision), far ahead (a gap), not JSON, not a delta of its revision.
    await pub.publish(channel, forged(1, 'r1'))
    await pub.publish(channel, forged(r2 + 50, 'r2'))
    await pub.publish(channel, `${r2 + 1} {"routes":["r2"]}\n{"revision":`)
    await pub.publish(channel, `${r2 + 1} {"routes":["r2"]}\n${JSON.stringify({ revision: r2 + 7, upstreams: {}, routes: {}, flags: {}, rollouts: {} })}`)
    const r3 = await split(a, 'r2', 'v2')
    await sameState(a, b)
    expect((await state(b)).revision).toBe(r3)
    // Applied revisions only ever grow, and none was a forged one.
    expect(seen).toEqual([...seen].sort((x, y) => x - y))
    expect(new Set(seen).size).toBe(seen.length)
    expect(seen.every((r) => r <= r3)).toBe(true)
  })
})
