/**
 * shutdownDelayMs on the real process: after SIGTERM, /readyz answers 503 at once while the
 * proxy goes on accepting and serving for the delay; then the port closes and it exits 0.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { get } from 'node:http'
import { request } from 'undici'
import { expect, it, onTestFinished } from 'vitest'
import { startBackend } from './helpers/backend.js'
import { refused } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { startLoad } from './helpers/load.js'
import { spawnProxy, type ProxyProcess } from './helpers/proxy-process.js'

/** One GET on a new TCP connection (no agent): status, or the error code. */
function fresh(url: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = get(url, { agent: false }, (res) => {
      res.resume()
      res.once('end', () => resolve(res.statusCode ?? 0))
    })
    req.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
  })
}

async function readyz(p: ProxyProcess): Promise<{ status: number; code?: string }> {
  const res = await request(p.adminUrl + '/readyz', { reset: true })
  const body = (await res.body.json()) as { error?: { code: string } }
  return { status: res.statusCode, code: body.error?.code }
}

async function setup(extra: Record<string, unknown>, args: string[] = []) {
  const b = await startBackend('d')
  onTestFinished(() => b.close())
  const p = await spawnProxy({ upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }], ...extra }, args)
  onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
  return p
}

it.each([[[]], [['--workers', '2']]])('SIGTERM with shutdownDelayMs: /readyz 503 at once, new connections served during the delay, then the port refuses; exit 0 (args %j)', async (args: string[]) => {
  const p = await setup({ shutdownDelayMs: 1500 }, args)
  const port = Number(new URL(p.url).port)
  expect(await readyz(p)).toEqual({ status: 200, code: undefined })

  const signalled = performance.now()
  const exit = p.stop('SIGTERM')
  // "at once": before the delay is over, which the requests below (still served) prove
  await eventually(async () => expect(await readyz(p)).toEqual({ status: 503, code: 'SHUTTING_DOWN' }), { timeoutMs: 1200 })

  // Every request on a new connection is served until the port closes. (One that reaches the
  // kernel's accept queue as the socket closes is reset: the race the delay exists to avoid.)
  const served: (number | string)[] = []
  const deadline = performance.now() + 10_000
  while (performance.now() < deadline) {
    const r = await fresh(p.url + '/')
    if (r === 'ECONNREFUSED' || r === 'ECONNRESET') break
    served.push(r)
  }
  const closedAfter = performance.now() - signalled
  expect(served.length).toBeGreaterThan(5)
  expect(served.filter((s) => s !== 200)).toEqual([])
  expect(closedAfter).toBeGreaterThanOrEqual(1400)
  // With workers the port closes once the last of them stopped accepting: a moment after the
  // first one reset a connection it had just taken.
  await eventually(async () => expect(await refused(port)).toBe(true), { timeoutMs: 2000 })
  expect(await exit).toBe(0)

  const log = p.stdout()
  expect(log).toContain('/readyz answers 503; still accepting and serving for shutdownDelayMs')
  expect(log.indexOf('still accepting')).toBeLessThan(log.indexOf('stopped accepting'))
})

it('without shutdownDelayMs the port closes at once (the default is 0)', async () => {
  const p = await setup({})
  const port = Number(new URL(p.url).port)
  const exit = p.stop('SIGTERM')
  await eventually(async () => expect(await refused(port)).toBe(true), { timeoutMs: 3000 })
  expect(await exit).toBe(0)
  expect(p.stdout()).not.toContain('still accepting')
})

it('with workers, a SIGHUP reload keeps /readyz at 200 throughout: a retiring worker gets no new connection, so it skips the delay', async () => {
  const p = await setup({ shutdownDelayMs: 1000 }, ['--workers', '2'])
  const load = startLoad(p.url, { workers: 4, maxMs: 30_000 })
  onTestFinished(() => load.stop().then(() => undefined))
  p.child.kill('SIGHUP')
  // Probes on new connections all through the reload: the primary hands them to ready workers only.
  const probes: { status: number; code?: string }[] = []
  const deadline = performance.now() + 25_000
  while (!p.stdout().includes('reload done') && performance.now() < deadline) probes.push(await readyz(p))
  expect(p.stdout()).toContain('reload done')
  expect(probes.length).toBeGreaterThan(5)
  expect(probes.filter((r) => r.status !== 200)).toEqual([])
  expect((await load.stop()).filter((r) => r !== 200)).toEqual([])
  expect(p.stdout()).toContain('reload: stopping')
  expect(p.stdout()).not.toContain('still accepting and serving for shutdownDelayMs')
})

it('SIGHUP re-reads shutdownDelayMs without workers', async () => {
  const p = await setup({})
  const config = JSON.parse(await readFile(p.configFile, 'utf8')) as Record<string, unknown>
  await writeFile(p.configFile, JSON.stringify({ ...config, shutdownDelayMs: 1000 }))
  p.child.kill('SIGHUP')
  await eventually(() => expect(p.stdout()).toContain('SIGHUP: reloaded: shutdownDelayMs 1000'))
  const exit = p.stop('SIGTERM')
  await eventually(async () => expect(await readyz(p)).toEqual({ status: 503, code: 'SHUTTING_DOWN' }), { timeoutMs: 900 })
  expect(await fresh(p.url + '/')).toBe(200)
  expect(await exit).toBe(0)
})
