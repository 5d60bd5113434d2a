/** Rolling replacement of targets: POST/GET /api/upstreams/{name}/replace and `ctl target replace`, on real backends. */
import { execFile } from 'node:child_process'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { backend, startApp, type TestApp, type TestConfig } from './helpers/admin.js'
import type { Backend } from './helpers/backend.js'
import { eventually } from './helpers/eventually.js'
import { startLoad } from './helpers/load.js'
import { spawnProxy } from './helpers/proxy-process.js'

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url))

/** A port nothing listens on: bound, then released. */
async function deadUrl(): Promise<string> {
  const server = createServer()
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as { port: number }
  await new Promise<void>((r) => server.close(() => r()))
  return `http://127.0.0.1:${port}`
}

async function backends(prefix: string, n: number): Promise<Backend[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => backend(`${prefix}${i + 1}`)))
}

function config(olds: Backend[], healthCheck = true): TestConfig {
  return {
    upstreams: { web: { targets: olds.map((b) => ({ url: b.url })), ...(healthCheck ? { healthCheck: { path: '/', intervalMs: 1_000, timeoutMs: 900 } } : {}) } },
    routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { web: 100 } }],
  }
}

const targetIds = async (t: TestApp): Promise<string[]> => ((await t.admin.get('/api/state')).body.upstreams.web.targets as { id: string }[]).map((x) => x.id).sort()

/** Waits until the replacement ends (bounded) and returns its record. */
async function ended(t: TestApp, timeoutMs = 20_000) {
  return eventually(
    async () => {
      const res = await t.admin.get('/api/upstreams/web/replace')
      expect(res.status).toBe(200)
      expect(res.body.phase).not.toBe('running')
      return res.body
    },
    { timeoutMs, intervalMs: 50 },
  )
}

describe('rolling replacement', () => {
  it('replaces 3 targets under steady load with 0 failed requests, exactly the new targets at the end, each step in the audit log', async () => {
    const olds = await backends('old', 3)
    const news = await backends('new', 3)
    const t = await startApp(config(olds))
    const load = startLoad(t.app.proxyUrl, { workers: 8, maxMs: 30_000 })
    await eventually(() => expect(load.count()).toBeGreaterThan(50))
    const res = await t.admin.post('/api/upstreams/web/replace', { targets: news.map((b) => ({ url: b.url })), drainWaitMs: 5_000 })
    expect(res.status).toBe(202)
    expect(res.body).toMatchObject({ upstream: 'web', phase: 'running', done: 0, total: 6, maxSurge: 1, maxUnavailable: 0 })
    expect(res.headers.get('etag')).toBe(`"${res.body.revision}"`)
    const record = await ended(t)
    const seenBefore = load.count()
    await eventually(() => expect(load.count()).toBeGreaterThan(seenBefore + 50))
    const results = await load.stop()
    expect(record).toMatchObject({ id: res.body.id, phase: 'succeeded', done: 6, total: 6 })
    expect(results.filter((r) => r !== 200)).toEqual([])
    expect(await targetIds(t)).toEqual(news.map((b) => b.id).sort())
    // the new targets serve, the old ones no longer do
    for (const b of news) expect(b.state.requests).toBeGreaterThan(0)
    const oldCounts = olds.map((b) => b.state.requests)
    for (let i = 0; i < 30; i++) expect((await t.proxy('/')).backend).toMatch(/^new/)
    expect(olds.map((b) => b.state.requests)).toEqual(oldCounts)

    // every step is its own audited write: add, drain, remove, with its place in the count
    const events = (await t.admin.get('/api/events?limit=100')).body.events as { reason: string | null; action: string; target: string }[]
    const steps = events.filter((e) => e.reason?.startsWith(`replace ${record.id}: `)).reverse()
    expect(steps.map((e) => e.action)).toEqual([
      'target.add', 'target.drain', 'target.remove',
      'target.add', 'target.drain', 'target.remove',
      'target.add', 'target.drain', 'target.remove',
    ])
    expect(steps[0]!.reason).toBe(`replace ${record.id}: add ${news[0]!.id} (1/6)`)
    expect(steps[1]!.reason).toBe(`replace ${record.id}: drain ${olds[0]!.id} (2/6)`)
    expect(steps.at(-1)!.reason).toBe(`replace ${record.id}: remove ${olds[2]!.id} (6/6)`)
  })

  it('a new target that never turns healthy stops it: removed again, the old targets serve, the replacement failed', async () => {
    const olds = await backends('old', 2)
    const good = await backend('new1')
    const dead = await deadUrl()
    const t = await startApp(config(olds))
    const res = await t.admin.post('/api/upstreams/web/replace', { targets: [{ url: good.url }, { url: dead }], healthyTimeoutMs: 500, drainWaitMs: 2_000 })
    expect(res.status).toBe(202)
    const record = await ended(t)
    const deadId = dead.slice('http://'.length)
    expect(record.phase).toBe('failed')
    expect(record.message).toContain(`new target ${deadId} did not become healthy within 500 ms`)
    expect(record.message).toContain('the old targets still serve')
    // the first step went through (new1 replaced old1); the stuck one is gone; old2 still serves
    expect(await targetIds(t)).toEqual([olds[1]!.id, good.id].sort())
    for (let i = 0; i < 20; i++) expect((await t.proxy('/')).status).toBe(200)
    const events = (await t.admin.get('/api/events?limit=20')).body.events as { reason: string | null }[]
    expect(events[0]!.reason).toBe(`replace ${record.id}: remove ${deadId}: not healthy within 500 ms`)
  })

  it('without a health check, a new target counts as healthy once a TCP connect to it succeeds', async () => {
    const olds = await backends('old', 1)
    const dead = await deadUrl()
    const t = await startApp(config(olds, false))
    expect((await t.admin.post('/api/upstreams/web/replace', { targets: [{ url: dead }], healthyTimeoutMs: 300 })).status).toBe(202)
    const failed = await ended(t)
    expect(failed.phase).toBe('failed')
    expect(failed.message).toMatch(/connect failed/)
    expect(await targetIds(t)).toEqual([olds[0]!.id])
    expect((await t.proxy('/')).status).toBe(200)

    const good = await backend('new1')
    expect((await t.admin.post('/api/upstreams/web/replace', { targets: [{ url: good.url, id: 'n1' }] })).status).toBe(202)
    expect(await ended(t)).toMatchObject({ phase: 'succeeded', done: 2, total: 2 })
    expect(await targetIds(t)).toEqual(['n1'])
    expect((await t.proxy('/')).backend).toBe('new1')
  })

  it('targets in both lists are kept as they are; the same targets again succeed with nothing to do', async () => {
    const olds = await backends('old', 2)
    const fresh = await backend('new1')
    const t = await startApp(config(olds))
    const targets = [{ url: olds[0]!.url }, { url: fresh.url }]
    expect((await t.admin.post('/api/upstreams/web/replace', { targets, maxSurge: 0, maxUnavailable: 1 })).status).toBe(202)
    expect(await ended(t)).toMatchObject({ phase: 'succeeded', done: 2, total: 2 })
    expect(await targetIds(t)).toEqual([olds[0]!.id, fresh.id].sort())
    const again = await t.admin.post('/api/upstreams/web/replace', { targets })
    expect(again.status).toBe(202)
    expect(await ended(t)).toMatchObject({ id: again.body.id, phase: 'succeeded', total: 0, message: 'the upstream already has exactly these targets' })
  })

  it('bad bodies are 400, an unknown upstream 404, a second replacement while one runs 409', async () => {
    const olds = await backends('old', 1)
    const t = await startApp(config(olds))
    const url = olds[0]!.url
    const bad = [
      {},
      { targets: [] },
      { targets: [{ url: 'ftp://127.0.0.1:1' }] },
      { targets: [{ url }], surprise: 1 },
      { targets: [{ url, state: 'active' }] },
      { targets: [{ url }], maxSurge: -1 },
      { targets: [{ url }], maxSurge: 0, maxUnavailable: 0 },
      { targets: [{ url: 'http://127.0.0.1:1', id: 'x' }, { url: 'http://127.0.0.1:2', id: 'x' }] },
      { targets: [{ url: 'http://127.0.0.1:1', id: olds[0]!.id }] },
    ]
    for (const body of bad) {
      const res = await t.admin.post('/api/upstreams/web/replace', body)
      expect({ body, status: res.status, code: res.body.error?.code }).toEqual({ body, status: 400, code: 'VALIDATION_FAILED' })
    }
    expect((await t.admin.post('/api/upstreams/nope/replace', { targets: [{ url }] })).status).toBe(404)
    expect((await t.admin.get('/api/upstreams/web/replace')).status).toBe(404)

    // If-Match: a stale revision is 412 and starts nothing; another form is 400; waitApplied is 400
    const { revision } = (await t.admin.get('/api/state')).body as { revision: number }
    const body = { targets: [{ url: 'http://127.0.0.1:1', id: 'n1' }] }
    const stale = await t.admin.post('/api/upstreams/web/replace', body, { headers: { 'if-match': String(revision + 1) } })
    expect({ status: stale.status, code: stale.body.error?.code }).toEqual({ status: 412, code: 'REVISION_MISMATCH' })
    expect((await t.admin.post('/api/upstreams/web/replace', body, { headers: { 'if-match': 'W/"1"' } })).status).toBe(400)
    const wait = await t.admin.post('/api/upstreams/web/replace?waitApplied=100', body)
    expect({ status: wait.status, code: wait.body.error?.code }).toEqual({ status: 400, code: 'VALIDATION_FAILED' })
    expect(wait.body.error.message).toContain('follow it with GET /api/upstreams/{name}/replace')
    expect((await t.admin.get('/api/upstreams/web/replace')).status).toBe(404)
    expect((await t.admin.get('/api/state')).body.revision).toBe(revision)

    // a stuck target with a long timeout keeps one running (If-Match at the current revision starts it)
    const running = await t.admin.post('/api/upstreams/web/replace', { targets: [{ url: await deadUrl() }], healthyTimeoutMs: 60_000 }, { headers: { 'if-match': `"${revision}"` } })
    expect(running.status).toBe(202)
    const second = await t.admin.post('/api/upstreams/web/replace', { targets: [{ url }] })
    expect(second.status).toBe(409)
    expect(second.body.error.message).toContain(`replacement ${running.body.id} of upstream "web" is running`)
    const now = await t.admin.get('/api/upstreams/web/replace')
    expect(now.body).toMatchObject({ id: running.body.id, phase: 'running' })
    expect(now.body.step).toMatch(/^wait for 127\.0\.0\.1:[0-9]+ to be healthy \(1\/2\)$/)
    expect(now.headers.get('etag')).toBe(`"${now.body.revision}"`)
  })
})

interface Run {
  code: number
  stdout: string
  stderr: string
}

function ctl(t: TestApp, ...args: string[]): Promise<Run> {
  const env = { ...process.env }
  delete env['SWITCHYARD_ADMIN_URL']
  delete env['SWITCHYARD_ADMIN_TOKEN']
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'ctl', '--admin', t.app.adminUrl, ...args], { env, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
    })
  })
}

describe('ctl target replace', () => {
  it('--wait exits 0 when it succeeds, 1 when it fails, 1 when refused; 2 for bad usage; --help', async () => {
    const olds = await backends('old', 2)
    const news = await backends('new', 2)
    const t = await startApp(config(olds))
    const ok = await ctl(t, 'target', 'replace', 'web', '--wait', news[0]!.url, `n2=${news[1]!.url}`, '--drain-wait', '2s')
    expect(ok).toMatchObject({ code: 0, stderr: '' })
    expect(ok.stdout).toMatch(/: succeeded, 4\/4, the upstream has exactly the 2 new target\(s\)\n$/)
    expect(await targetIds(t)).toEqual([news[0]!.id, 'n2'].sort())

    const failed = await ctl(t, 'target', 'replace', 'web', news[0]!.url, await deadUrl(), '--healthy-timeout', '300ms', '--max-surge', '2', '--wait', '10s')
    expect(failed.code).toBe(1)
    expect(failed.stderr).toMatch(/failed: new target 127\.0\.0\.1:[0-9]+ did not become healthy within 300 ms/)
    expect(await targetIds(t)).toEqual([news[0]!.id, 'n2'].sort())

    const refused = await ctl(t, 'target', 'replace', 'nope', news[0]!.url, '--wait')
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/NOT_FOUND/)

    const json = await ctl(t, '--json', 'target', 'replace', 'web', news[0]!.url, `n2=${news[1]!.url}`)
    expect(json.code).toBe(0)
    expect(JSON.parse(json.stdout)).toMatchObject({ upstream: 'web', total: 0 })

    expect((await ctl(t, 'target', 'replace', 'web')).code).toBe(2)
    expect((await ctl(t, 'target', 'replace', 'web', news[0]!.url, '--max-surge', 'many')).code).toBe(2)
    expect((await ctl(t, 'target', 'replace', 'web', news[0]!.url, '--id', 'x')).code).toBe(2)
    const waitApplied = await ctl(t, 'target', 'replace', 'web', news[0]!.url, '--wait-applied', '5s')
    expect(waitApplied.code).toBe(2)
    expect(waitApplied.stderr).toContain('use --wait to follow it to its end')
    const stale = await ctl(t, 'target', 'replace', 'web', news[0]!.url, '--if-match', '1')
    expect(stale.code).toBe(1)
    expect(stale.stderr).toMatch(/REVISION_MISMATCH/)
    const help = await ctl(t, 'target', 'replace', '--help')
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('usage: switchyard ctl target replace UPSTREAM URL...')
  }, 90_000) // nine CLI processes, each a node start-up
})

describe('with --workers 2 (memory store)', () => {
  it("every worker answers GET with the driving worker's record and refuses a second replacement (409)", async () => {
    const olds = await backends('old', 1)
    const news = await backends('new', 1)
    const p = await spawnProxy(config(olds) as unknown as Record<string, unknown>, ['--workers', '2'])
    try {
      // A connection per request, so node:cluster spreads them over both workers.
      const call = async (method: string, path: string, body?: unknown) => {
        const res = await fetch(p.adminUrl + path, {
          method,
          headers: { connection: 'close', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
          body: body === undefined ? undefined : JSON.stringify(body),
        })
        return { status: res.status, body: (await res.json()) as any }
      }
      const stuck = await call('POST', '/api/upstreams/web/replace', { targets: [{ url: await deadUrl() }], healthyTimeoutMs: 60_000 })
      expect(stuck.status).toBe(202)
      await eventually(async () => {
        for (let i = 0; i < 8; i++) expect((await call('GET', '/api/upstreams/web/replace')).body).toMatchObject({ id: stuck.body.id, phase: 'running' })
      }, { timeoutMs: 10_000 })
      for (let i = 0; i < 4; i++) expect((await call('POST', '/api/upstreams/web/replace', { targets: [{ url: news[0]!.url }] })).status).toBe(409)
    } finally {
      await p.stop()
    }
  }, 60_000)
})
