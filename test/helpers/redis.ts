/**
 * A real `redis-server` per test file, on a free loopback port (never 6379, so a developer's
 * own Redis is never touched), without persistence: a restart always comes back empty,
 * which is exactly the "Redis restarted empty" case a fleet must survive. The binary is
 * SWITCHYARD_TEST_REDIS_BIN when set, else redis-server on PATH (test/setup/redis-available.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createConnection, createServer } from 'node:net'
import { redisBin } from '../setup/redis-available.js'

export interface RedisServer {
  port: number
  url: string
  /** SIGTERM, then SIGKILL if it has not exited within 2 s; waits for the exit. */
  stop(): Promise<void>
  /** Sends `signal` (default SIGKILL) and waits for the exit: an abrupt outage. A no-op once it has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>
  /** Starts a new, empty server on the same port and waits until it answers PING. */
  restart(): Promise<void>
  /** SIGSTOP: the socket stays open but nothing answers (a hung or partitioned Redis). */
  pause(): void
  /** SIGCONT after pause(). */
  resume(): void
}

const READY_TIMEOUT_MS = 5_000
const POLL_INTERVAL_MS = 20
const STOP_GRACE_MS = 2_000

/** Every redis-server still running; the exit hook kills them if a test forgot to. */
const alive = new Set<ChildProcess>()
let exitHookInstalled = false

export async function startRedis(): Promise<RedisServer> {
  const port = await freePort()
  const args = ['--save', '', '--appendonly', 'no', '--port', String(port), '--bind', '127.0.0.1']
  const spawnOne = () => spawnRedisServer(args, () => answersPing(port), { what: `redis-server on port ${port}` })
  let server = await spawnOne()
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill: (signal) => server.kill(signal),
    stop: () => server.stop(),
    async restart() {
      await server.kill('SIGKILL')
      server = await spawnOne()
    },
    pause() {
      server.child.kill('SIGSTOP')
    },
    resume() {
      server.child.kill('SIGCONT')
    },
  }
}

/** A `redis-server` process a test owns (a plain server, a Cluster node, a Sentinel...). */
export interface RedisProcess {
  readonly child: ChildProcess
  /** the process's last output (for error messages) */
  output(): string
  exited(): boolean
  /** Sends `signal` (default SIGKILL) and waits until it is gone; a no-op once it has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>
  /** SIGCONT (a paused process would not act on SIGTERM), SIGTERM, SIGKILL after 2 s; waits for the exit. */
  stop(): Promise<void>
}

/**
 * Spawns `redis-server args` and waits until `isUp()` says it serves (polled, at most 5 s),
 * tracked so the exit hook kills it if a test forgot to. Throws, the process killed, when it
 * exits or does not come up in time.
 */
export async function spawnRedisServer(args: string[], isUp: () => Promise<boolean>, opts: { cwd?: string; what?: string } = {}): Promise<RedisProcess> {
  installExitHook()
  const child = spawn(redisBin(), args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  alive.add(child)
  let output = ''
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-4000) // for the error message only
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  child.once('exit', () => alive.delete(child))
  // 'close' comes after 'exit' once the stdio pipes are closed too: no handle is left.
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()))
  const spawnError = new Promise<never>((_, reject) => child.once('error', reject))
  spawnError.catch(() => {}) // observed below; avoid an unhandled rejection if unused
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null
  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    if (exited()) return
    child.kill(signal)
    await closed
  }
  const server: RedisProcess = {
    child,
    output: () => output,
    exited,
    kill,
    async stop() {
      if (exited()) return
      child.kill('SIGCONT')
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS)
      try {
        await kill('SIGTERM')
      } finally {
        clearTimeout(timer)
      }
    },
  }
  const deadline = performance.now() + READY_TIMEOUT_MS
  while (performance.now() < deadline && !exited()) {
    if (await Promise.race([isUp(), spawnError])) return server
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS))
  }
  child.kill('SIGKILL')
  throw new Error(`${opts.what ?? `redis-server ${args.join(' ')}`} did not answer within ${READY_TIMEOUT_MS} ms:\n${output}`)
}

/** A port the kernel just handed out on 127.0.0.1; free again once we close it. */
export async function freePort(): Promise<number> {
  // Below the kernel's range for outgoing connections' local ports: a port found free here is
  // bound by its process a moment later, and in between the suite's thousands of client
  // connections must not be able to take it as their source port.
  const below = quietRange()
  for (let tries = 0; below !== null && tries < 50; tries++) {
    const port = below.from + Math.floor(Math.random() * (below.to - below.from))
    if (await bindable(port)) return port
  }
  return bindable(0) as Promise<number>
}

/** Ports under the ephemeral range (from /proc), or null where it cannot be read or leaves too few. */
function quietRange(): { from: number; to: number } | null {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
    return low - 10_000 >= 5_000 ? { from: 10_000, to: low } : null
  } catch {
    return null
  }
}

/** Binds `port` (0: any) on loopback and releases it: the port, or false when it is taken. */
function bindable(port: number): Promise<number | false> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve(false) : reject(err)))
    server.listen(port, '127.0.0.1', () => {
      const address = server.address()
      const got = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => (got === 0 ? reject(new Error('no port assigned')) : resolve(got)))
    })
  })
}

/** True when something on `port` answers PING with +PONG within 500 ms. */
export function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    let reply = ''
    const finish = (ok: boolean): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => finish(false), 500)
    socket.once('error', () => finish(false))
    socket.once('connect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk) => {
      reply += chunk.toString()
      if (reply.includes('\r\n')) finish(reply.startsWith('+PONG'))
    })
  })
}

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // 'exit' handlers must be synchronous: kill() only sends the signal, which is enough.
  process.once('exit', () => {
    for (const child of alive) child.kill('SIGKILL')
  })
}
