/**
 * Rolling replacement across two instances on one Redis: the one that does not drive it
 * answers GET with the driver's record and refuses a second replacement (409); each step
 * reaches it through the store, so requests through it never fail either.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { backend, startApp, type TestConfig } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { startLoad } from './helpers/load.js'
import { startRedis, type RedisServer } from './helpers/redis.js'

let redis: RedisServer
beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  await redis?.stop()
})

it('the second instance shows the driver\'s progress, refuses a second replacement, and serves through it with 0 failed requests', async () => {
  const olds = await Promise.all([backend('old1'), backend('old2')])
  const news = await Promise.all([backend('new1'), backend('new2')])
  const config: TestConfig = {
    store: { type: 'redis', url: redis.url, prefix: `replace-${randomBytes(4).toString('hex')}` },
    upstreams: { web: { targets: olds.map((b) => ({ url: b.url })), healthCheck: { path: '/', intervalMs: 1_000, timeoutMs: 900 } } },
    routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { web: 100 } }],
  }
  const a = await startApp(config)
  const b = await startApp(config)
  const load = startLoad(b.app.proxyUrl, { workers: 4, maxMs: 30_000 })
  await eventually(() => expect(load.count()).toBeGreaterThan(20))

  // a's replacement waits on a target that never answers, long enough to be seen from b
  const stuck = await a.admin.post('/api/upstreams/web/replace', { targets: [{ url: 'http://127.0.0.1:1' }], healthyTimeoutMs: 60_000 })
  expect(stuck.status).toBe(202)
  await eventually(async () => expect((await b.admin.get('/api/upstreams/web/replace')).body).toMatchObject({ id: stuck.body.id, phase: 'running' }))
  // a's steps are in the store (the stuck target added, waiting on its health check) before a
  // stops: the record is running from before its first step, and b's plan depends on them
  await eventually(async () => {
    const targets = (await b.admin.get('/api/state')).body.upstreams.web.targets as { url: string }[]
    expect(targets.map((t) => t.url)).toContain('http://127.0.0.1:1')
  })
  const refused = await b.admin.post('/api/upstreams/web/replace', { targets: news.map((n) => ({ url: n.url })) })
  expect(refused.status).toBe(409)
  expect(refused.body.error.message).toContain(`replacement ${stuck.body.id} of upstream "web" is running`)
  await a.close() // the driver stops: its lease and record go with it

  const res = await eventually(
    async () => {
      const r = await b.admin.post('/api/upstreams/web/replace', { targets: news.map((n) => ({ url: n.url })), drainWaitMs: 5_000 })
      expect(r.status).toBe(202)
      return r
    },
    { timeoutMs: 15_000, intervalMs: 200 },
  )
  const record = await eventually(
    async () => {
      const r = (await b.admin.get('/api/upstreams/web/replace')).body
      expect(r).toMatchObject({ id: res.body.id })
      expect(r.phase).not.toBe('running')
      return r
    },
    { timeoutMs: 20_000, intervalMs: 50 },
  )
  const results = await load.stop()
  // a's steps stayed done: old1 went (2 targets to 1 may shrink first), the stuck one was added;
  // b removes old2 and the stuck one and adds both new ones
  expect(record).toMatchObject({ phase: 'succeeded', done: 4, total: 4 })
  expect(results.filter((r) => r !== 200)).toEqual([])
  const ids = ((await b.admin.get('/api/state')).body.upstreams.web.targets as { id: string }[]).map((t) => t.id).sort()
  expect(ids).toEqual(news.map((n) => n.id).sort())
}, 60_000)
