/**
 * `switchyard ctl diff` and `ctl apply`: the real CLI (dist/cli.js) as a child process, a config
 * file on disk, against in-process instances (memory store, and two instances on one real Redis).
 */
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ctl, type Run } from './helpers/ctl-run.js'
import { backend, startApp, twoVersions, type TestApp } from './helpers/admin.js'
import type { Backend } from './helpers/backend.js'
import { freePort, startRedis, type RedisServer } from './helpers/redis.js'

const TOKEN = 'gitops-token'



let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'switchyard-gitops-'))
})

let files = 0
async function file(text: string, ext = 'yaml'): Promise<string> {
  const path = join(dir, `state-${++files}.${ext}`)
  await writeFile(path, text)
  return path
}

/** The pipeline's file: static parts included (ignored), the api split and an optional route. */
function yaml(v1: Backend, v2: Backend, opts: { split?: string; beta?: boolean; extra?: string } = {}): string {
  return `listen: { host: 0.0.0.0, port: 8080 }
admin: { host: 0.0.0.0, token: "\${UNSET_IN_THIS_JOB}" }
store: { type: memory }
upstreams:
  v1: { targets: [ { url: "${v1.url}" } ] }
  v2: { targets: [ { url: "\${V2_URL}" } ] }
routes:
  - name: api
    match: { pathPrefix: / }
    split: ${opts.split ?? '{ v1: 100, v2: 0 }'}
${opts.beta ? '  - { name: beta, match: { pathPrefix: /beta/ }, split: { v2: 1 } }\n' : ''}${opts.extra ?? ''}`
}

async function setup(): Promise<{ t: TestApp; v1: Backend; v2: Backend; run: (...args: string[]) => Promise<Run> }> {
  const v1 = await backend('v1')
  const v2 = await backend('v2')
  const t = await startApp(twoVersions(v1, v2, { admin: { token: TOKEN } }), { token: TOKEN })
  const run = (...args: string[]) => ctl(['--admin', t.app.adminUrl, '--token', TOKEN, ...args], { V2_URL: v2.url })
  return { t, v1, v2, run }
}

const revision = async (t: TestApp): Promise<number> => (await t.admin.get('/api/state')).body.revision

describe('switchyard ctl diff / apply', () => {
  it('diff shows an added route and a changed split (exit 1); apply makes them one revision and one audit event; then diff exits 0', async () => {
    const { t, v1, v2, run } = await setup()
    const path = await file(yaml(v1, v2, { split: '{ v1: 50, v2: 50 }', beta: true }))
    const d = await run('diff', '-f', path)
    expect(d.stderr).toBe('')
    expect(d.code).toBe(1)
    expect(d.stdout).toBe(
      ['~ route api', '    split.v1: 100 → 50', '    split.v2: 0 → 50', '+ route beta {"match":{"pathPrefix":"/beta/"},"split":{"v2":1}}', '1 to add, 1 to change, 0 to remove', 'compared with revision 1', ''].join('\n'),
    )
    expect(await revision(t)).toBe(1)

    const a = await run('apply', '-f', path, '--reason', 'release 42', '--if-match', '1', '--wait-applied')
    expect(a.stderr).toBe('')
    expect(a.code).toBe(0)
    expect(a.stdout).toContain('+ route beta')
    expect(a.stdout.endsWith('ok: revision 2\n')).toBe(true)
    const state = (await t.admin.get('/api/state')).body
    expect(state.revision).toBe(2)
    expect(state.routes.map((r: { name: string; split: unknown }) => [r.name, r.split])).toEqual([['api', { v1: 50, v2: 50 }], ['beta', { v2: 1 }]])
    const events = (await t.admin.get('/api/events?limit=10')).body.events
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({ revision: 2, action: 'state.apply', actor: 'token', reason: 'release 42' })

    const again = await run('diff', '-f', path)
    expect(again).toMatchObject({ code: 0, stdout: `no changes: the live state (revision 2) matches ${path}\n` })
    const noop = await run('apply', '-f', path)
    expect(noop.code).toBe(0)
    expect(noop.stdout).toBe(`no changes: the live state matches ${path}\nok: revision 2\n`)
    expect(await revision(t)).toBe(2)
    const json = await run('diff', '-f', path, '--json')
    expect(JSON.parse(json.stdout)).toMatchObject({ revision: 2, changed: false, dryRun: true })
  })

  it('apply refuses (exit 1, 409) while a rollout drives a route it would change, applies a file that leaves it alone; --force aborts it', async () => {
    const { t, v1, v2, run } = await setup()
    expect((await t.admin.post('/api/rollouts', { id: 'r1', route: 'api', from: 'v1', to: 'v2', steps: [{ weight: 10 }, { weight: 100 }] })).status).toBe(201)
    const atStart = await revision(t)
    const changesApi = await file(yaml(v1, v2, { split: '{ v1: 50, v2: 50 }' }))
    const d = await run('diff', '-f', changesApi)
    expect(d.code).toBe(1)
    expect(d.stdout).toContain('! rollout r1 (paused) drives route api and this file changes route api')
    const refused = await run('apply', '-f', changesApi)
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/^switchyard ctl: 409 CONFLICT: rollout r1 \(paused\) drives route "api"/)
    expect(await revision(t)).toBe(atStart)

    // The split as the rollout holds it, and a new route: the rollout's route is untouched.
    const aside = await file(yaml(v1, v2, { split: '{ v1: 90, v2: 10 }', beta: true }))
    const ok = await run('apply', '-f', aside)
    expect(ok.code).toBe(0)
    expect(ok.stdout).toBe(`+ route beta {"match":{"pathPrefix":"/beta/"},"split":{"v2":1}}\n1 to add, 0 to change, 0 to remove\nok: revision ${atStart + 1}\n`)
    expect((await t.admin.get('/api/rollouts/r1')).body.phase).toBe('paused')

    const forced = await run('apply', '-f', changesApi, '--force')
    expect(forced.code).toBe(0)
    expect(forced.stdout).toContain('aborted: rollout r1')
    expect((await t.admin.get('/api/rollouts/r1')).body.phase).toBe('aborted')
  })

  it('a stale --if-match exits 1 with 412 and changes nothing', async () => {
    const { t, v1, v2, run } = await setup()
    expect((await t.admin.put('/api/routes/api/split', { v1: 90, v2: 10 })).status).toBe(200)
    const r = await run('apply', '-f', await file(yaml(v1, v2)), '--if-match', '1')
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^switchyard ctl: 412 REVISION_MISMATCH: /)
    expect(await revision(t)).toBe(2)
  })

  it('an invalid file exits 2 with every problem of its state part and sends nothing; static parts are not judged', async () => {
    const { t, v1, v2, run } = await setup()
    const bad = await file(yaml(v1, v2, { split: '{ v1: -1, v3: 10 }', extra: '  - { name: api, split: { v2: 1 } }\nflags:\n  half: { enabled: true, percent: 50 }\n' }))
    for (const command of ['diff', 'apply']) {
      const r = await run(command, '-f', bad)
      expect(r.code, command).toBe(2)
      expect(r.stdout).toBe('')
      const lines = r.stderr.trim().split('\n')
      expect(lines[0]).toBe(`switchyard ctl: ${bad} has 5 problems; nothing was sent:`)
      expect(lines.slice(1).sort()).toEqual(
        [
          '  flags.half.by: is required when percent is below 100: name one of header, cookie, ip',
          '  routes[0].split.v1: must be >= 0',
          '  routes[0].split.v3: unknown upstream "v3"',
          '  routes[1].match: same match as routes[0] ("api")',
          '  routes[1].name: duplicate route "api"',
        ].sort(),
      )
    }
    const syntax = await run('diff', '-f', await file('upstreams: {\n'))
    expect(syntax.code).toBe(2)
    expect(syntax.stderr).toMatch(/syntax error at line/)
    expect((await run('apply', '-f', join(dir, 'missing.yaml'))).stderr).toMatch(/cannot read/)
    // JSON works as well as YAML.
    const json = await file(JSON.stringify({ upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } }, routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100, v2: 0 } }] }), 'json')
    expect((await run('diff', '-f', json)).code).toBe(0)
    expect(await revision(t)).toBe(1)
  })

  it("tls.ca paths are the server's to check: the file is sent, the server judges them", async () => {
    const { t, v1, v2, run } = await setup()
    const ca = fileURLToPath(new URL('./fixtures/tls/ca.pem', import.meta.url))
    const withCa = (path: string) => yaml(v1, v2, { extra: `  - { name: secure, match: { pathPrefix: /secure/ }, split: { s: 1 } }\n` }).replace('routes:', `  s: { targets: [ { url: "https://127.0.0.1:1" } ], tls: { ca: "${path}" } }\nroutes:`)
    // A path this host lacks is not refused here (exit 2, nothing sent) but by the server, with its path.
    const missing = await run('apply', '-f', await file(withCa(join(dir, 'no-such-ca.pem'))))
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/400 VALIDATION_FAILED/)
    expect(missing.stderr).toMatch(/upstreams\.s\.tls\.ca/)
    expect(await revision(t)).toBe(1)
    const ok = await run('apply', '-f', await file(withCa(ca)))
    expect([ok.code, ok.stderr]).toEqual([0, ''])
    expect(await revision(t)).toBe(2)
  })

  it('usage: -f is required, --help per subcommand, an unreachable API is exit 2 for diff and 1 for apply', async () => {
    const { v1, v2, run } = await setup()
    expect((await run('diff')).code).toBe(2)
    expect((await run('apply', 'x.yaml')).code).toBe(2)
    expect((await run('diff', '-f', 'x', '--force')).code).toBe(2)
    for (const command of ['diff', 'apply']) {
      const help = await ctl([command, '--help'])
      expect(help.code).toBe(0)
      expect(help.stdout).toMatch(new RegExp(`^usage: switchyard ctl ${command} -f FILE`))
      expect(help.stdout).toContain('listen, admin, store and the other static parts are ignored')
    }
    const path = await file(yaml(v1, v2))
    const down = `http://127.0.0.1:${await freePort()}`
    expect((await ctl(['--admin', down, 'diff', '-f', path], { V2_URL: v2.url })).code).toBe(2)
    const apply = await ctl(['--admin', down, 'apply', '-f', path], { V2_URL: v2.url })
    expect(apply.code).toBe(1)
    expect(apply.stderr).toMatch(/cannot reach the admin API/)
  })
})

describe('switchyard ctl apply with the Redis store', () => {
  let redis: RedisServer
  beforeAll(async () => {
    redis = await startRedis()
  })
  afterAll(async () => {
    await redis.stop()
  })

  it('one write through one instance: one revision, followed by the other instance (--wait-applied)', async () => {
    const v1 = await backend('v1')
    const v2 = await backend('v2')
    const config = { ...twoVersions(v1, v2), store: { type: 'redis' as const, url: redis.url, prefix: 'gitops' } }
    const a = await startApp(config)
    const b = await startApp(config)
    const path = await file(yaml(v1, v2, { split: '{ v1: 50, v2: 50 }', beta: true }))
    const r = await ctl(['--admin', a.app.adminUrl, 'apply', '-f', path, '--wait-applied', '5s'], { V2_URL: v2.url })
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect(r.stdout.endsWith('ok: revision 2\n')).toBe(true)
    const onB = (await b.admin.get('/api/state')).body
    expect(onB.revision).toBe(2)
    expect(onB.routes.map((x: { name: string }) => x.name)).toEqual(['api', 'beta'])
    expect((await b.proxy('/beta/x')).backend).toBe('v2')
    expect((await ctl(['--admin', b.app.adminUrl, 'diff', '-f', path], { V2_URL: v2.url })).code).toBe(0)
    expect((await b.admin.get('/api/events?limit=10')).body.events.map((e: { action: string }) => e.action)).toEqual(['state.apply'])
  })
})
