/**
 * What the logs say, as JSON lines with their fields: a state change, Redis going away and
 * coming back, a target's health flipping, a worker dying, sampled access lines (off by
 * default), and `--log-format pretty` for a terminal.
 */
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { startApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { memoryLogger } from './helpers/log.js'
import { spawnProxy } from './helpers/proxy-process.js'
import { freePort, startRedis, type RedisServer } from './helpers/redis.js'
import { statusBackend } from './helpers/status-backend.js'

let redis: RedisServer
beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  await redis?.stop()
})

describe('log lines', () => {
  it('a split write: one line with the revision, actor, reason and what changed', async () => {
    const v1 = await statusBackend('v1')
    const log = memoryLogger('info')
    const t = await startApp({ admin: { tokens: { ci: 'ci-token' } }, upstreams: { v1: { targets: [{ url: v1.url }] } }, routes: [{ name: 'api', split: { v1: 1 } }] }, { logger: log.logger, token: 'ci-token' })
    await t.admin.put('/api/routes/api/split', { v1: 2 }, { headers: { 'x-switchyard-reason': 'more v1' } })
    const [line] = log.find('state changed')
    expect(line).toMatchObject({ level: 'info', revision: 2, actor: 'ci', reason: 'more v1', action: 'split.put', target: 'routes/api/split', changed: { routes: ['api'], upstreams: [], flags: [], rollouts: [] } })
    expect(typeof line!['time']).toBe('string')
    expect(log.find('applied state').at(-1)).toMatchObject({ revision: 2 })
  })

  it('Redis killed and restarted: disconnected, connected, re-seeded', async () => {
    const v1 = await statusBackend('v1')
    const log = memoryLogger('info')
    await startApp({ store: { type: 'redis', url: redis.url, prefix: 'logs' }, upstreams: { v1: { targets: [{ url: v1.url }] } }, routes: [{ name: 'api', split: { v1: 1 } }] }, { logger: log.logger, resyncMs: 100 })
    await redis.kill('SIGKILL')
    await eventually(() => expect(log.find('store disconnected')[0]).toMatchObject({ level: 'info', connected: false }), { timeoutMs: 10_000 })
    await redis.restart()
    await eventually(() => expect(log.find('store connected').at(-1)).toMatchObject({ connected: true }), { timeoutMs: 10_000 })
    await eventually(() => expect(log.find('re-seeded the store')[0]).toMatchObject({ level: 'warn', revision: 1 }), { timeoutMs: 10_000 })
  })

  it('a target that cannot be reached: unhealthy, with its reason', async () => {
    const port = await freePort() // nothing listens there
    const log = memoryLogger('info')
    const t = await startApp({ upstreams: { v1: { targets: [{ url: `http://127.0.0.1:${port}` }] } }, routes: [{ name: 'api', split: { v1: 1 } }] }, { logger: log.logger })
    expect((await t.proxy('/')).status).toBe(502)
    await eventually(() => expect(log.find('is unhealthy')[0]).toMatchObject({ level: 'warn', upstream: 'v1', target: `127.0.0.1:${port}`, healthy: false, reason: 'connect failed' }))
  })

  it('sampled access lines: every request at sample 1, none by default', async () => {
    const v1 = await statusBackend('v1')
    const on = memoryLogger('info')
    const t = await startApp({ accessLog: { sample: 1 }, upstreams: { v1: { targets: [{ url: v1.url }] } }, routes: [{ name: 'api', split: { v1: 1 } }] }, { logger: on.logger })
    for (let i = 0; i < 3; i++) await t.proxy(`/x/${i}?q=1`)
    await eventually(() => expect(on.find('access')).toHaveLength(3))
    // without accessLog.query the line has the path only: query strings often carry tokens
    expect(on.find('access')[0]).toMatchObject({ type: 'access', method: 'GET', url: '/x/0', status: 200, route: 'api', upstream: 'v1', target: v1.id })
    expect(JSON.stringify(on.lines())).not.toContain('q=1')
    expect(typeof on.find('access')[0]!['ms']).toBe('number')

    const off = memoryLogger('info')
    const quiet = await startApp({ upstreams: { v1: { targets: [{ url: v1.url }] } }, routes: [{ name: 'api', split: { v1: 1 } }] }, { logger: off.logger })
    for (let i = 0; i < 3; i++) await quiet.proxy('/x')
    await quiet.close() // closing flushes whatever was queued
    expect(off.find('access')).toEqual([])
  })

  it('accessLog.query: true logs the query string too; a reload turns it off again', async () => {
    const v1 = await statusBackend('v1')
    const log = memoryLogger('info')
    const config = (query: boolean) => ({ accessLog: { sample: 1, query }, upstreams: { v1: { targets: [{ url: v1.url }] } }, routes: [{ name: 'api', split: { v1: 1 } }] })
    const t = await startApp(config(true), { logger: log.logger })
    await t.proxy('/x?token=secret&page=2')
    await eventually(() => expect(log.find('access').map((l) => l['url'])).toEqual(['/x?token=secret&page=2']))
    const changes = await t.app.reload({ ...config(false), listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } })
    expect(changes).toContain('accessLog.query false')
    await t.proxy('/y?token=secret')
    await eventually(() => expect(log.find('access').map((l) => l['url'])).toEqual(['/x?token=secret&page=2', '/y']))
  })
})

describe('processes', () => {
  it('a worker that dies: a JSON warning with its slot, pid and how it exited', async () => {
    const v1 = await statusBackend('v1')
    const p = await spawnProxy({ upstreams: { v1: { targets: [{ url: v1.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] }, ['--workers', '2'])
    onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
    const pids = await eventually(async () => {
      const res = await request(p.adminUrl + '/api/instances', { reset: true })
      const list = ((await res.body.json()) as { instances: { pid: number }[] }).instances.map((i) => i.pid)
      expect(new Set(list).size).toBe(2)
      return list
    }, { timeoutMs: 10_000 })
    process.kill(pids[0]!, 'SIGKILL')
    const line = await eventually(() => {
      const found = p.stdout().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).find((l) => l.worker === pids[0] && /died/.test(l.msg))
      expect(found).toBeDefined()
      return found
    }, { timeoutMs: 10_000 })
    expect(line).toMatchObject({ level: 'warn', exit: 'SIGKILL' })
    expect(typeof line.slot).toBe('number')
    expect(typeof line.time).toBe('string')
  })

  it('--log-format pretty writes readable lines, not JSON', async () => {
    const v1 = await statusBackend('v1')
    const p = await spawnProxy({ upstreams: { v1: { targets: [{ url: v1.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] }, ['--log-format', 'pretty'])
    expect(await p.stop('SIGTERM')).toBe(0)
    const out = p.stdout()
    expect(out).toMatch(/INFO.*applied state/)
    expect(out.split('\n').filter((l) => l.startsWith('{'))).toEqual([])
  })
})
