/** `switchyard ctl rollout ...` and `ctl events`: the real CLI (dist/cli.js) against a real running proxy. */
import { execFile, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it, onTestFinished } from 'vitest'
import { startApp, type TestApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { startLoad } from './helpers/load.js'
import { statusBackend } from './helpers/status-backend.js'

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url))

interface Run {
  code: number
  stdout: string
  stderr: string
}

function env(): NodeJS.ProcessEnv {
  const base = { ...process.env }
  delete base['SWITCHYARD_ADMIN_URL']
  delete base['SWITCHYARD_ADMIN_TOKEN']
  return base
}

function ctl(t: TestApp | null, args: string[]): Promise<Run> {
  const admin = t === null ? [] : ['--admin', t.app.adminUrl]
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'ctl', ...admin, ...args], { env: env(), timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
    })
  })
}

async function setup(): Promise<TestApp> {
  const v1 = await statusBackend('v1')
  const v2 = await statusBackend('v2')
  return startApp(
    {
      upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100 } }],
    },
    { telemetryMs: 100, rolloutTickMs: 50 },
  )
}

const FAST = ['--interval', '300ms', '--min-requests', '3', '--pause', '200ms']

describe('switchyard ctl rollout', () => {
  it('start, status, list, pause, resume, promote, abort', async () => {
    const t = await setup()
    const start = await ctl(t, ['rollout', 'start', '--route', 'api', '--from', 'v1', '--to', 'v2', '--steps', '10,50', '--pause', '60s', '--id', 'c1', '--reason', 'deploy 42'])
    expect(start).toMatchObject({ code: 0, stderr: '' })
    expect(start.stdout).toMatch(/^ok: revision 2\nstarted: c1 /)
    expect((await t.admin.get('/api/routes/api')).body.split).toEqual({ v1: 90, v2: 10 })
    const status = await ctl(t, ['rollout', 'status', 'c1'])
    expect(status.code).toBe(0)
    expect(status.stdout).toMatch(/^c1 api v1→v2 progressing step 1\/2 v1=90 v2=10 \| v2 err - p99 - \(0 req\) \| v1 err - p99 - \(0 req\) \| no analysis yet \| \d+s in step/)
    expect((await ctl(t, ['rollout', 'status'])).stdout).toContain('c1 api v1→v2')
    expect(JSON.parse((await ctl(t, ['rollout', 'status', 'c1', '--json'])).stdout)).toMatchObject({ id: 'c1', phase: 'progressing' })
    expect((await ctl(t, ['rollout', 'pause', 'c1'])).stdout).toMatch(/c1: paused at 10 % v2/)
    expect((await ctl(t, ['rollout', 'pause', 'c1']))).toMatchObject({ code: 1 })
    expect((await ctl(t, ['rollout', 'resume', 'c1'])).code).toBe(0)
    expect((await ctl(t, ['rollout', 'promote', 'c1'])).stdout).toMatch(/promoted/)
    expect((await t.admin.get('/api/routes/api')).body.split).toEqual({ v1: 0, v2: 100 })
    await ctl(t, ['rollout', 'start', '--route', 'api', '--from', 'v2', '--to', 'v1', '--steps', '30', '--id', 'c2'])
    expect((await ctl(t, ['rollout', 'abort', 'c2'])).code).toBe(0)
    expect((await t.admin.get('/api/routes/api')).body.split).toEqual({ v1: 0, v2: 100 })
    const list = await ctl(t, ['rollout', 'list'])
    expect(list.stdout.split('\n').filter(Boolean).map((l) => l.split(' ')[0])).toEqual(['c2', 'c1'])
    const events = await ctl(t, ['events', '--limit', '3'])
    expect(events.code).toBe(0)
    expect(events.stdout.trim().split('\n')).toHaveLength(3)
    expect(events.stdout).toMatch(/anonymous rollout.abort rollouts\/c2/)
    expect((await ctl(t, ['events', '--limit', '100'])).stdout).toMatch(/rollout.start rollouts\/c1 — deploy 42/)
  })

  it('start --steps shadow:N begins with a shadow step (--ignore, --max-mismatch-rate); status shows the comparison', async () => {
    const t = await setup()
    const start = await ctl(t, ['rollout', 'start', '--route', 'api', '--from', 'v1', '--to', 'v2', '--steps', 'shadow:20,50', '--pause', '60s', '--ignore', 'id,at', '--max-mismatch-rate', '0.05', '--id', 's1'])
    expect(start).toMatchObject({ code: 0, stderr: '' })
    const r = (await t.admin.get('/api/rollouts/s1')).body
    expect(r.spec.steps).toEqual([{ shadow: 20, pauseMs: 60_000 }, { weight: 50, pauseMs: 60_000 }])
    expect(r.spec.shadow).toEqual({ ignore: ['id', 'at'] })
    expect(r.spec.analysis.maxMismatchRate).toBe(0.05)
    expect((await t.admin.get('/api/routes/api')).body).toMatchObject({ split: { v1: 100, v2: 0 }, mirror: { upstream: 'v2', percent: 20, ignore: ['id', 'at'] } })
    const load = startLoad(t.app.proxyUrl, { workers: 2, maxMs: 30_000 })
    onTestFinished(() => load.stop().then(() => undefined))
    await eventually(async () => expect((await ctl(t, ['rollout', 'status', 's1'])).stdout).toMatch(/\| shadow: \d+ compared, mismatch 0\.0% \|/), { timeoutMs: 15_000, intervalMs: 200 })
    expect((await ctl(t, ['rollout', 'start', '--route', 'api', '--from', 'v1', '--to', 'v2', '--steps', 'shadow:x']))).toMatchObject({ code: 2 })
  })

  it('start --wait exits 0 when promoted; status --watch piped prints a line per change', async () => {
    const t = await setup()
    const load = startLoad(t.app.proxyUrl, { workers: 2, maxMs: 30_000 })
    onTestFinished(() => load.stop().then(() => undefined))
    // --watch on a live rollout: a line per change, then the end
    await ctl(t, ['rollout', 'start', '--route', 'api', '--from', 'v1', '--to', 'v2', '--steps', '20,100', '--interval', '300ms', '--min-requests', '3', '--pause', '3s', '--id', 'w0'])
    const watched = await ctl(t, ['rollout', 'status', 'w0', '--watch'])
    expect(watched.code).toBe(0)
    expect(watched.stdout.split('\n').filter((l) => l.startsWith('w0 api')).length).toBeGreaterThanOrEqual(2)
    expect(watched.stdout).toMatch(/w0 api v1→v2 promoted .*\nw0: promoted/)
    expect(watched.stdout).not.toMatch(/\x1b\[/)
    // start --wait: follows it to the end, exit 0
    const run = await ctl(t, ['rollout', 'start', '--route', 'api', '--from', 'v2', '--to', 'v1', '--steps', '20,100', ...FAST, '--id', 'w1', '--wait'])
    expect(run.code).toBe(0)
    expect(run.stdout).toMatch(/started: w1/)
    expect(run.stdout).toMatch(/w1: promoted/)
    expect(run.stdout).not.toMatch(/\x1b\[/)
  })

  it('start --wait exits 1 when the rollout is aborted', async () => {
    const t = await setup()
    const waiting = ctl(t, ['rollout', 'start', '--route', 'api', '--from', 'v1', '--to', 'v2', '--steps', '20', '--pause', '60s', '--id', 'a1', '--wait'])
    await eventually(async () => expect((await t.admin.get('/api/rollouts/a1')).status).toBe(200))
    await t.admin.post('/api/rollouts/a1/abort')
    const run = await waiting
    expect(run.code).toBe(1)
    expect(run.stdout).toMatch(/a1: aborted/)
  })

  it('--help of each subcommand lists its flags; bad input is a usage error', async () => {
    const help = await ctl(null, ['rollout', 'start', '--help'])
    expect(help.code).toBe(0)
    for (const flag of ['--route', '--from', '--to', '--steps', '--pause', '--interval', '--max-error-rate', '--max-p99', '--min-requests', '--wait']) expect(help.stdout).toContain(flag)
    expect((await ctl(null, ['rollout', 'status', '--help'])).stdout).toContain('--watch')
    expect((await ctl(null, ['events', '--help'])).stdout).toContain('--follow')
    for (const sub of ['pause', 'resume', 'promote', 'abort', 'list']) expect((await ctl(null, ['rollout', sub, '-h'])).stdout).toContain(`rollout ${sub}`)
    const bad = await ctl(null, ['rollout', 'start', '--route', 'api', '--from', 'v1', '--to', 'v2', '--steps', '10,200'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('--steps must be weights from 0 to 100')
    expect((await ctl(null, ['rollout', 'status', '--follow'])).code).toBe(2)
    expect((await ctl(null, ['rollout', 'frob'])).code).toBe(2)
  })

  it('events --follow prints new events as they come', async () => {
    const t = await setup()
    const child = spawn(process.execPath, [CLI, 'ctl', '--admin', t.app.adminUrl, 'events', '--follow'], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] })
    onTestFinished(() => void child.kill('SIGKILL'))
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d))
    await t.admin.put('/api/routes/api/split', { v1: 60, v2: 40 }, { headers: { 'x-switchyard-reason': 'followed' } })
    await eventually(() => expect(out).toMatch(/split.put routes\/api\/split — followed/), { timeoutMs: 10_000 })
  })
})
