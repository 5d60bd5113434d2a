// Child-process plumbing shared by the bench scripts (throughput.js, propagation.js, deploy.js): every
// server runs in its own child process, and none of them may outlive the bench, however it ends.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repo root. Children run there, so relative paths such as dist/cli.js resolve. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')

const children = [] // every child start() made: stopAll() and killAllNow() go through them
const tmpDirs = [] // every tempDir(): killAllNow() removes them

/** A promise-based delay, for polling loops and pacing. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** A port that is free on 127.0.0.1 right now, so the bench never clashes with anything else running. */
export function freePort () {
  return new Promise((resolve, reject) => {
    const s = net.createServer().once('error', reject)
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  })
}

/** A fresh directory under the OS temp dir (configs, nginx prefixes); killAllNow() removes it whatever happens. */
export function tempDir (prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  tmpDirs.push(dir)
  return dir
}

/**
 * Spawns `cmd` in ROOT, with the bench's environment plus `env`, and registers it for cleanup.
 * Keeps the last 4000 characters of its output in `child.tail` (shown when it fails) and sets
 * `child.exited` once it is gone, so a crashed server is reported instead of waited for.
 */
export function start (name, cmd, args, { ipc = false, env = {} } = {}) {
  const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe', ...(ipc ? ['ipc'] : [])] })
  child.tail = ''
  const keep = (d) => { child.tail = (child.tail + d).slice(-4000) }
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  child.on('exit', (code, sig) => { child.exited = { code, sig } })
  child.on('error', (err) => { child.exited = { err: err.message } })
  child.label = name
  children.push(child)
  return child
}

/** SIGTERM, then SIGKILL after graceMs: a server may shut down cleanly (write its CPU profile, unregister), but never hangs the bench. */
export async function stop (child, graceMs = 2000) {
  if (child.exited || child.exitCode !== null || child.signalCode !== null) return
  const gone = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await gone
  clearTimeout(t)
}

/** stop() on every child started so far (or only those `which` picks), in parallel: the orderly end of a bench. */
export function stopAll (graceMs = 2000, which = () => true) {
  return Promise.all(children.filter(which).map((c) => stop(c, graceMs)))
}

/** Last resort, synchronous so it can run in process 'exit': SIGKILL whatever still runs and remove the temp dirs. */
export function killAllNow () {
  for (const c of children) if (!c.exited && c.exitCode === null && c.signalCode === null) { try { c.kill('SIGKILL') } catch {} }
  for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true })
}

/**
 * Runs a bench's main(): a failure is printed and sets exit code 1 (the bench still ends
 * normally), and either way `cleanup` (default: stopAll()) then killAllNow() run before it returns.
 */
export async function runBench (main, cleanup = () => stopAll()) {
  try {
    await main()
  } catch (err) {
    console.error(`bench failed: ${err.stack ?? err}`)
    process.exitCode = 1
  } finally {
    await cleanup()
    killAllNow()
  }
}

/** Runs killAllNow() on exit and turns SIGINT/SIGTERM/SIGHUP into exit(130), so Ctrl-C or a crash leaves no orphan processes. */
export function cleanupOnExit () {
  process.on('exit', killAllNow)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => { console.error(`\n${sig}: stopping`); process.exit(130) })
}

/**
 * Calls `check` every `intervalMs` until it returns something truthy (→ true; a throw counts as
 * "not yet") or `timeoutMs` has passed (→ false). Throws at once, with its output, if `child`
 * (may be null) has exited: a server that died will never become ready.
 */
async function poll (child, check, timeoutMs, intervalMs) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (child?.exited) throw new Error(`${child.label} exited early ${JSON.stringify(child.exited)}:\n${child.tail}`)
    try { if (await check()) return true } catch {}
    await sleep(intervalMs)
  }
  return false
}

/** Waits until `child` answers any HTTP request on 127.0.0.1:port (any status): it is listening. */
export async function waitHttp (child, port, timeoutMs = 15_000) {
  const answers = async () => {
    await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(1000) }).then((r) => r.arrayBuffer())
    return true
  }
  if (await poll(child, answers, timeoutMs, 100)) return
  throw new Error(`${child.label} did not answer HTTP on :${port} within ${timeoutMs} ms:\n${child.tail}`)
}

/** Waits until `check()` is truthy, for readiness that takes more than a listening port (`child` may be null). */
export async function until (what, child, check, timeoutMs = 15_000) {
  if (await poll(child, check, timeoutMs, 50)) return
  throw new Error(`${what} not ready within ${timeoutMs} ms${child ? `:\n${child.tail}` : ''}`)
}

/** true when a Redis server answers PING on 127.0.0.1:port. */
export function redisPing (port) {
  return new Promise((resolve) => {
    const s = net.createConnection({ host: '127.0.0.1', port })
    const done = (ok) => { clearTimeout(t); s.destroy(); resolve(ok) }
    const t = setTimeout(() => done(false), 500)
    s.once('error', () => done(false))
    s.once('connect', () => s.write('PING\r\n'))
    s.on('data', (d) => done(d.toString().startsWith('+PONG')))
  })
}

/**
 * A redis-server on 127.0.0.1:port that keeps nothing on disk (so a restart comes back empty);
 * resolves with its child once it answers PING. `onStart(child)` runs before the wait (logging).
 */
export async function startRedisServer (port, onStart = () => {}) {
  const child = start('redis-server', 'redis-server', ['--save', '', '--appendonly', 'no', '--port', String(port), '--bind', '127.0.0.1'])
  onStart(child)
  await until('redis-server', child, () => redisPing(port), 5_000)
  return child
}
