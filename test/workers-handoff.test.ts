/**
 * `--workers`: the primary holds the ports and hands each new connection to a ready worker,
 * keeping its copy until the worker says it took it. A worker SIGKILLed while connections are
 * on their way to it: those go to another worker, so no client is left with an open connection
 * that nobody will ever answer (what node:cluster's own round-robin does to such a connection).
 */
import { get } from 'node:http'
import { expect, it, onTestFinished } from 'vitest'
import { startBackend } from './helpers/backend.js'
import { eventually } from './helpers/eventually.js'
import { spawnProxy, type ProxyProcess } from './helpers/proxy-process.js'

/** A request that got no answer and no error in this long was stranded. */
const HANG_MS = 4_000

/** One GET on a new TCP connection: the status, the error code, or 'hang'. */
function fresh(url: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = get(url, { agent: false }, (res) => {
      res.resume()
      res.once('end', () => resolve(res.statusCode ?? 0))
      res.once('error', () => resolve('response error'))
    })
    req.setTimeout(HANG_MS, () => {
      resolve('hang')
      req.destroy()
    })
    req.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
  })
}

function readyLines(p: ProxyProcess): { worker: number }[] {
  return p
    .stdout()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg: string; worker: number })
    .filter((l) => / is ready$/.test(l.msg))
}

it('workers SIGKILLed one after another under new-connection load: every request is answered or fails at once, none hangs', { timeout: 90_000 }, async () => {
  const b = await startBackend('h')
  onTestFinished(() => b.close())
  // replacements start after 50 ms, not 1 s
  const p = await spawnProxy({ workerRestartBackoffMs: 50, upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] }, ['--workers', '2'])
  onTestFinished(() => p.stop('SIGKILL').then(() => undefined))

  const outcomes: (number | string)[] = []
  let stop = false
  const loops = Array.from({ length: 16 }, async () => {
    while (!stop) outcomes.push(await fresh(p.url + '/'))
  })
  onTestFinished(async () => {
    stop = true
    await Promise.all(loops)
  })

  // The workers' pids, from the primary's log: the first two from /api/instances would do too,
  // but a replacement is only in the log.
  const pidsRes = await eventually(async () => {
    const res = await fetch(p.adminUrl + '/api/instances')
    const pids = ((await res.json()) as { instances: { pid: number }[] }).instances.map((i) => i.pid)
    expect(new Set(pids).size).toBe(2)
    return pids
  })
  let live = [...pidsRes]
  const KILLS = 6
  for (let k = 0; k < KILLS; k++) {
    const before = outcomes.length
    await eventually(() => expect(outcomes.length).toBeGreaterThan(before + 100), { timeoutMs: 20_000, intervalMs: 10 })
    const victim = live[k % 2]!
    process.kill(victim, 'SIGKILL')
    const replacement = await eventually(
      () => {
        const newPids = readyLines(p).map((l) => l.worker).filter((pid) => !pidsRes.includes(pid))
        expect(newPids.length).toBeGreaterThan(k)
        return newPids[k]!
      },
      { timeoutMs: 20_000, intervalMs: 20 },
    )
    live = live.map((pid) => (pid === victim ? replacement : pid))
  }
  const before = outcomes.length
  await eventually(() => expect(outcomes.length).toBeGreaterThan(before + 100), { timeoutMs: 20_000, intervalMs: 10 })
  stop = true
  await Promise.all(loops)

  const served = outcomes.filter((o) => o === 200).length
  const failed = outcomes.filter((o) => o !== 200)
  // Requests the killed worker had taken fail as their connection dies (at most the 16 in
  // flight per kill); nothing else fails, and nothing waits for an answer that never comes.
  expect(failed.filter((o) => o === 'hang')).toEqual([])
  expect(failed.length).toBeLessThanOrEqual(16 * KILLS)
  // at least 101 outcomes between kills, 7 times over, less the failures bounded above
  expect(served).toBeGreaterThan(7 * 101 - 16 * KILLS)
})
