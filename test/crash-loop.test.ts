/**
 * Crash-looping workers on the real process: restarts back off (doubling), and when every
 * worker failed at start 5 times in a row the primary exits 1 printing the worker's reason.
 * The config's `workerRestartBackoffMs` shortens the 1 s base.
 */
import { createServer, type Server } from 'node:net'
import { readFile, writeFile } from 'node:fs/promises'
import { request } from 'undici'
import { expect, it, onTestFinished } from 'vitest'
import { startBackend } from './helpers/backend.js'
import { refused } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { spawnProxy, type ProxyProcess } from './helpers/proxy-process.js'

const BASE_MS = 50

async function workerPids(p: ProxyProcess): Promise<number[]> {
  return eventually(async () => {
    const res = await request(p.adminUrl + '/api/instances', { reset: true, headersTimeout: 2_000 })
    const pids = ((await res.body.json()) as { instances: { pid: number }[] }).instances.map((i) => i.pid)
    expect(new Set(pids).size).toBe(2)
    return pids
  })
}

interface Line {
  level: string
  msg: string
  slot?: number
  delayMs?: number
}

function logLines(p: ProxyProcess): Line[] {
  return p
    .stdout()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Line)
}

function exitOf(p: ProxyProcess): Promise<number | string> {
  return new Promise((resolve) => {
    if (p.child.exitCode !== null || p.child.signalCode !== null) return resolve(p.child.exitCode ?? p.child.signalCode!)
    p.child.once('exit', (code, signal) => resolve(code ?? signal ?? -1))
  })
}

it('workers that keep failing at start back off (doubling) and the primary exits 1 with their reason', { timeout: 30_000 }, async () => {
  const b = await startBackend('c')
  onTestFinished(() => b.close())
  const p = await spawnProxy({ workerRestartBackoffMs: BASE_MS, upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] }, ['--workers', '2'])
  onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
  const pids = await workerPids(p)
  const exit = exitOf(p)

  // From now on a worker cannot start: the file it reads names an unknown upstream.
  await writeFile(p.configFile, JSON.stringify({ workerRestartBackoffMs: BASE_MS, upstreams: {}, routes: [{ name: 'r', split: { v9: 1 } }] }))
  for (const pid of pids) process.kill(pid, 'SIGKILL')

  expect(await eventually(() => exitOf(p), { timeoutMs: 20_000 })).toBe(1)
  expect(await exit).toBe(1)
  expect(p.stderr()).toContain('switchyard: workers keep failing at start (5 times in a row each): the config has problems: routes[0].split.v9: unknown upstream "v9"')

  const restarts = logLines(p).filter((l) => l.msg.includes('restarting in'))
  for (const slot of [0, 1]) {
    const delays = restarts.filter((l) => l.slot === slot).map((l) => l.delayMs)
    // killed (was ready), then 4 failures at start: each restart waits twice as long
    expect(delays.slice(0, 5)).toEqual([1, 2, 4, 8, 16].map((k) => k * BASE_MS))
  }
  expect(restarts.some((l) => l.msg.includes('failed at start (4 in a row: the config has problems'))).toBe(true)
  expect(logLines(p)).toContainEqual(expect.objectContaining({ level: 'error', msg: 'every worker failed at start 5 times in a row; exiting' }))
  expect(await refused(Number(new URL(p.url).port))).toBe(true)
})

it('at the very first start, a port that cannot be bound makes the primary exit 1 at once, with the reason', async () => {
  // The proxy port is taken: the primary, which holds the ports, cannot listen.
  const blocker: Server = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  onTestFinished(() => new Promise<void>((resolve) => blocker.close(() => resolve())))
  const port = (blocker.address() as { port: number }).port
  const err = await spawnProxy({ listen: { host: '127.0.0.1', port }, upstreams: {}, routes: [] }, ['--workers', '2']).then(
    () => 'started',
    (e: Error) => e.message,
  )
  expect(err).toMatch(new RegExp(`proxy exited with 1: switchyard: cannot start: listen EADDRINUSE: address already in use 127.0.0.1:${port}`))
})

it('one worker crash-looping while the other serves: the primary stays up, and a worker that gets ready resets its count', { timeout: 30_000 }, async () => {
  const b = await startBackend('c')
  onTestFinished(() => b.close())
  const good = { workerRestartBackoffMs: BASE_MS, upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] }
  const p = await spawnProxy(good, ['--workers', '2'])
  onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
  const [victim, survivor] = await workerPids(p)
  const withPorts = JSON.parse(await readFile(p.configFile, 'utf8')) as Record<string, unknown>
  await writeFile(p.configFile, JSON.stringify({ ...withPorts, routes: [{ name: 'r', split: { v9: 1 } }] }))
  process.kill(victim!, 'SIGKILL')

  await eventually(() => expect(logLines(p).some((l) => l.msg.includes('failed at start (5 in a row'))).toBe(true), { timeoutMs: 20_000, intervalMs: 50 })
  expect(p.child.exitCode).toBe(null)
  expect((await request(p.url + '/', { reset: true })).statusCode).toBe(200)

  await writeFile(p.configFile, JSON.stringify(withPorts))
  await eventually(() => expect(logLines(p).some((l) => l.msg.endsWith('is ready'))).toBe(true), { timeoutMs: 20_000, intervalMs: 50 })
  const replacement = (await workerPids(p)).find((pid) => pid !== survivor)
  expect(replacement).not.toBe(victim)

  // Its count started again from 0: the next failure at start is the first in a row.
  const seen = logLines(p).length
  await writeFile(p.configFile, JSON.stringify({ ...withPorts, routes: [{ name: 'r', split: { v9: 1 } }] }))
  process.kill(replacement!, 'SIGKILL')
  await eventually(() => expect(logLines(p).slice(seen).some((l) => l.msg.includes('failed at start (1 in a row'))).toBe(true), { timeoutMs: 20_000, intervalMs: 50 })
  expect(await p.stop('SIGTERM')).toBe(0)
})
