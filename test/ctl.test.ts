/** `switchyard ctl`: the real CLI (dist/cli.js) as a child process against an in-process instance. */
import { createServer } from 'node:net'
import { describe, expect, it } from 'vitest'
import { ctl, type Run } from './helpers/ctl-run.js'
import { backend, startApp, twoVersions, type TestApp } from './helpers/admin.js'

const TOKEN = 'ctl-test-token'



async function setup(): Promise<{ t: TestApp; run: (...args: string[]) => Promise<Run>; v1id: string }> {
  const v1 = await backend('v1')
  const v2 = await backend('v2')
  const t = await startApp(twoVersions(v1, v2, { admin: { token: TOKEN } }), { token: TOKEN })
  const run = (...args: string[]) => ctl(['--admin', t.app.adminUrl, '--token', TOKEN, ...args])
  return { t, run, v1id: v1.id }
}

const revision = async (t: TestApp): Promise<number> => (await t.admin.get('/api/state')).body.revision

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

describe('switchyard ctl', () => {
  it('status shows the routes with their splits, the targets and the fleet', async () => {
    const { run, v1id } = await setup()
    const r = await run('status')
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^revision 1, 1 instance \(applied: 1\)/)
    expect(r.stdout).toMatch(/api\s+v1=100 v2=0/)
    expect(r.stdout).toContain(`v1  ${v1id}  active  healthy`)
    const json = await run('status', '--json')
    expect(JSON.parse(json.stdout).state.routes[0].split).toEqual({ v1: 100, v2: 0 })
  })

  it('status shows a route\'s mirror', async () => {
    const { t, run } = await setup()
    expect((await t.admin.put('/api/routes/api', { split: { v1: 100, v2: 0 }, mirror: { upstream: 'v2', percent: 5 } })).status).toBe(200)
    expect((await run('status')).stdout).toMatch(/api\s+v1=100 v2=0  mirror 5% to v2/)
  })

  it('status says why a target is out and marks an instance that is not following', async () => {
    const { t, run } = await setup()
    const port = await closedPort()
    const put = await t.admin.put('/api/upstreams/v3', { targets: [{ url: `http://127.0.0.1:${port}` }], healthCheck: { path: '/healthz' } })
    expect(put.status).toBe(201)
    // An instance stuck at revision 1 that says it has been behind for 9 s.
    await t.app.control.store.register({ id: 'stuck-1', host: 'h', pid: 42, appliedRevision: 1, behindMs: 9_000, inflight: {} }, 30_000)
    const r = await run('status')
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(`v3  127.0.0.1:${port}  active  unhealthy (waiting for its first passing health check)`)
    expect(r.stdout).toMatch(/behind: stuck-1 \(h pid 42\) at revision 1  NOT FOLLOWING \(behind for 9 s\)/)
  })

  it('split changes the live split, prints the revision and records the reason', async () => {
    const { t, run } = await setup()
    const r = await run('split', 'api', 'v1=90', 'v2=10', '--reason', 'canary 10 %', '--if-match', '1')
    expect(r).toMatchObject({ code: 0, stdout: 'ok: revision 2\n' })
    const state = (await t.admin.get('/api/state')).body
    expect(state.routes[0].split).toEqual({ v1: 90, v2: 10 })
    const events = (await t.admin.get('/api/events?limit=1')).body.events
    expect(events[0]).toMatchObject({ revision: 2, reason: 'canary 10 %' })
    const applied = await run('split', 'api', 'v1=50', 'v2=50', '--wait-applied', '2000')
    expect(applied).toMatchObject({ code: 0, stdout: 'ok: revision 3\n' })
  })

  it('a stale --if-match exits 1 with REVISION_MISMATCH and changes nothing', async () => {
    const { t, run } = await setup()
    expect((await run('split', 'api', 'v1=90', 'v2=10')).code).toBe(0)
    const r = await run('split', 'api', 'v1=0', 'v2=100', '--if-match', '1')
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^switchyard ctl: 412 REVISION_MISMATCH: /)
    expect(await revision(t)).toBe(2)
  })

  it('API validation errors print each detail; bad split arguments are refused before any call', async () => {
    const { t, run } = await setup()
    const unknown = await run('split', 'api', 'v1=90', 'v3=10')
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/^switchyard ctl: 400 VALIDATION_FAILED: /)
    expect(unknown.stderr).toMatch(/\n {2}\S.*: .*v3/)
    for (const bad of [['v1=abc'], ['v1'], ['=5'], [], ['v1=-1'], ['v1=1.5']]) {
      const r = await run('split', 'api', ...bad)
      expect(r.code, bad.join(' ')).toBe(2)
      expect(r.stderr).toContain('usage: switchyard ctl')
    }
    expect(await revision(t)).toBe(1)
  })

  it('drain --wait exits 0 when nothing is in flight; target add and remove', async () => {
    const { t, run, v1id } = await setup()
    const drained = await run('drain', 'v1', v1id, '--wait', '2s')
    expect(drained.code).toBe(0)
    expect(drained.stdout).toContain('ok: revision 2')
    expect((await t.admin.get(`/api/upstreams/v1/targets/${encodeURIComponent(v1id)}`)).body.state).toBe('draining')
    expect((await run('drain', 'v1', v1id, '--wait', 'soon')).code).toBe(2)

    const added = await run('target', 'add', 'v1', 'http://127.0.0.1:9', '--id', 'extra:1')
    expect(added).toMatchObject({ code: 0, stdout: 'ok: revision 3\nadded: v1/extra:1\n' })
    expect((await t.admin.get('/api/state')).body.upstreams.v1.targets.map((x: { id: string }) => x.id)).toEqual([v1id, 'extra:1'])
    const dup = await run('target', 'add', 'v1', 'http://127.0.0.1:9', '--id', 'extra:1')
    expect(dup.code).toBe(1)
    expect(dup.stderr).toMatch(/409 CONFLICT/)

    const removed = await run('target', 'remove', 'v1', 'extra:1', '--wait', '500ms')
    expect(removed.code).toBe(0)
    expect((await t.admin.get('/api/state')).body.upstreams.v1.targets.map((x: { id: string }) => x.id)).toEqual([v1id])
    const missing = await run('target', 'remove', 'v1', 'extra:1')
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/404 NOT_FOUND/)
  })

  it('drain --wait exits 1 with a message when requests are still in flight at the deadline', async () => {
    const { t, run, v1id } = await setup()
    const slow = t.proxy('/delay?ms=3000')
    await new Promise((resolve) => setTimeout(resolve, 200))
    const r = await run('drain', 'v1', v1id, '--wait', '300ms')
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`switchyard ctl: v1/${v1id} is draining but not drained after 300ms: 1 request(s) still in flight`)
    expect((await slow).status).toBe(200)
  })

  it('flag set, get and list', async () => {
    const { t, run } = await setup()
    expect(await run('flag', 'list')).toMatchObject({ code: 0, stdout: 'no flags\n' })
    expect(await run('flag', 'set', 'beta', 'on', '--percent', '25', '--by-header', 'x-user')).toMatchObject({ code: 0, stdout: 'ok: revision 2\n' })
    expect((await t.admin.get('/api/flags/beta')).body).toMatchObject({ enabled: true, percent: 25, by: { header: 'x-user' } })
    expect(await run('flag', 'get', 'beta')).toMatchObject({ code: 0, stdout: 'beta  on  25%  by header x-user\n' })
    expect((await run('flag', 'set', 'dark', 'off')).code).toBe(0)
    expect((await run('flag', 'list')).stdout).toBe('beta  on  25%  by header x-user\ndark  off\n')
    expect(JSON.parse((await run('flag', 'get', 'dark', '--json')).stdout)).toMatchObject({ name: 'dark', enabled: false })
    expect((await run('flag', 'set', 'x', 'maybe')).code).toBe(2)
    expect((await run('flag', 'set', 'x', 'on', '--by-ip', '--by-header', 'h')).code).toBe(2)
    expect((await run('flag', 'get', 'nope')).stderr).toMatch(/404 NOT_FOUND/)
    expect(await revision(t)).toBe(3)
  })

  it('takes the URL and token from the environment; a wrong token exits 1 UNAUTHORIZED', async () => {
    const { t } = await setup()
    const env = { SWITCHYARD_ADMIN_URL: t.app.adminUrl, SWITCHYARD_ADMIN_TOKEN: TOKEN }
    expect((await ctl(['status'], env)).code).toBe(0)
    const wrong = await ctl(['status', '--token', 'nope'], env)
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toMatch(/^switchyard ctl: 401 UNAUTHORIZED: /)
    const none = await ctl(['split', 'api', 'v1=1'], { SWITCHYARD_ADMIN_URL: t.app.adminUrl })
    expect(none.code).toBe(1)
    expect(await revision(t)).toBe(1)
  })

  it('an unreachable admin API exits 1 with a message', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`
    const r = await ctl(['status', '--admin', url])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`switchyard ctl: cannot reach the admin API at ${url}: `)
    expect(r.stderr).toContain('ECONNREFUSED')
  })

  it('usage: --help exits 0, no command or an unknown one exits 2', async () => {
    const help = await ctl(['--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('usage: switchyard ctl')
    expect((await ctl([])).code).toBe(2)
    expect((await ctl(['frobnicate'])).code).toBe(2)
    expect((await ctl(['status', '--bogus'])).code).toBe(2)
    const rollout = await ctl(['rollout', 'start'])
    expect(rollout.code).toBe(2)
    expect(rollout.stderr).toContain('switchyard ctl: rollout start needs --route')
  })
})
