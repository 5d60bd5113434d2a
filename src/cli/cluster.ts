/**
 * `switchyard start --workers N`: the primary process forks N workers that share the proxy
 * and admin ports (node:cluster hands connections round-robin). Each worker is a whole
 * instance; with the memory store the primary holds the state and the workers reach it over
 * IPC (store/ipc.ts), with Redis each worker follows Redis. The primary restarts a worker that
 * dies, stops them all gracefully on SIGTERM/SIGINT, and on SIGHUP replaces them one by one
 * with workers that read the config file anew: a new worker is listening before an old one
 * stops, so no connection is refused and no request fails (SPEC §2).
 */
import cluster, { type Worker } from 'node:cluster'
import { loadConfigFile } from '../config/load.js'
import type { ConfigFile } from '../config/schema.js'
import { formatProblem } from '../errors.js'
import { serveStore } from '../store/ipc.js'
import { MemoryStore } from '../store/memory.js'

/** What a worker tells the primary once it listens. */
export interface ReadyMessage {
  sy: 'ready'
  proxyUrl: string
  adminUrl: string
}

const log = (line: string) => process.stdout.write(`switchyard: ${line}\n`)

/** Resolves when `worker` is listening; rejects if it exits first. */
function whenReady(worker: Worker): Promise<ReadyMessage> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: unknown) => {
      if ((m as ReadyMessage | null)?.sy !== 'ready') return
      worker.off('message', onMessage)
      worker.off('exit', onExit)
      resolve(m as ReadyMessage)
    }
    const onExit = (code: number | null, signal: string | null) => {
      worker.off('message', onMessage)
      reject(new Error(`worker ${worker.process.pid} exited before it was ready (${signal ?? code})`))
    }
    worker.on('message', onMessage)
    worker.once('exit', onExit)
  })
}

function whenExited(worker: Worker): Promise<number> {
  if (worker.process.exitCode !== null || worker.process.signalCode !== null) return Promise.resolve(worker.process.exitCode ?? 1)
  return new Promise((resolve) => worker.once('exit', (code: number | null) => resolve(code ?? 1)))
}

export async function runPrimary(configPath: string, config: ConfigFile, count: number): Promise<number> {
  const store = (config.store?.type ?? 'memory') === 'memory' ? new MemoryStore() : null
  /** the workers alive now (a crashed one's replacement included) */
  const live = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined)
  const answer = store ? serveStore(store, live) : null
  /** workers being replaced or stopped on purpose: their exit is not a crash */
  const leaving = new Set<Worker>()
  let stopping = false

  const fork = (): Worker => {
    const w = cluster.fork()
    if (answer) w.on('message', (m: unknown) => answer(w, m))
    w.once('exit', (code, signal) => {
      if (stopping || leaving.has(w)) return
      log(`worker ${w.process.pid} died (${signal ?? code}); starting another`)
      setTimeout(() => {
        if (!stopping) void whenReady(fork()).catch((err: Error) => log(err.message))
      }, 1_000).unref()
    })
    return w
  }

  const workers = Array.from({ length: count }, fork)
  let ready: ReadyMessage[]
  try {
    ready = await Promise.all(workers.map(whenReady))
  } catch (err) {
    process.stderr.write(`switchyard: cannot start: ${(err as Error).message}\n`)
    stopping = true
    for (const w of workers) w.process.kill('SIGKILL')
    return 1
  }

  let reloading: Promise<void> | null = null
  const reload = async () => {
    const { config: next, problems } = await loadConfigFile(configPath)
    if (problems.length > 0) {
      for (const p of problems) process.stderr.write(formatProblem(p) + '\n')
      log('SIGHUP: the config has problems; nothing changed')
      return
    }
    if ((next.store?.type ?? 'memory') !== (config.store?.type ?? 'memory')) {
      log('SIGHUP: changing the store type needs a restart; nothing changed')
      return
    }
    const olds = live()
    log(`SIGHUP: replacing ${olds.length} workers one by one`)
    for (const old of olds) {
      if (stopping) return
      const fresh = fork()
      try {
        await whenReady(fresh)
      } catch (err) {
        log(`SIGHUP: a new worker failed (${(err as Error).message}); the remaining old workers stay`)
        return
      }
      leaving.add(old)
      if (old.isConnected()) old.send({ sy: 'retire' })
      await whenExited(old)
    }
    log('SIGHUP: reload done')
  }
  process.on('SIGHUP', () => {
    if (reloading) return log('SIGHUP: a reload is already running')
    reloading = reload().finally(() => (reloading = null))
  })

  process.stdout.write(
    `switchyard proxy ${ready[0]!.proxyUrl} admin ${ready[0]!.adminUrl} store ${config.store?.type ?? 'memory'} workers ${count}\n`,
  )

  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      if (stopping) return
      stopping = true
      const all = live()
      log(`${signal}: stopping ${all.length} workers`)
      for (const w of all) w.process.kill('SIGTERM')
      void Promise.all(all.map(whenExited)).then(async (codes) => {
        await store?.close()
        resolve(codes.every((c) => c === 0) ? 0 : 1)
      })
    }
    process.on('SIGTERM', () => stop('SIGTERM'))
    process.on('SIGINT', () => stop('SIGINT'))
  })
}
