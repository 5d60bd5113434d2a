/**
 * `switchyard start --workers N`: the primary process forks N workers and holds the proxy and
 * admin ports itself: it hands each connection to a ready worker, round-robin, and to another
 * worker if that one dies before taking it (distributor.ts). Each worker is a whole instance;
 * with the memory store the primary holds the state and the workers reach it over IPC
 * (store/ipc.ts), with Redis each worker follows Redis.
 *
 * - A worker that dies is restarted after a backoff (`workerRestartBackoffMs`, 1 s by default,
 *   doubling per slot up to a cap of 30 × that; the delay resets once a worker stayed ready
 *   as long as the cap). When every slot's worker failed at start (exited
 *   before it was ready) 5 times in a row, the primary gives up and exits 1 with the last
 *   worker's reason, so an orchestrator sees the crash loop. At the very first start any
 *   worker failing exits 1 at once: nothing has served yet, and the fault is the config's.
 * - SIGTERM/SIGINT stop every worker gracefully.
 * - SIGHUP replaces the workers one by one with workers that read the config file anew: a new
 *   worker takes connections before an old one gets no more and retires, so no connection is
 *   refused. A new `listen` or admin address is bound before the first new worker starts; the
 *   old one closes when its last worker has gone.
 */
import cluster, { type Worker } from 'node:cluster'
import { loadConfigFile } from '../config/load.js'
import type { ConfigFile } from '../config/schema.js'
import { formatProblem } from '../errors.js'
import { logReady, type Logger } from '../log.js'
import { serveStore } from '../store/ipc.js'
import { MemoryStore } from '../store/memory.js'
import { MetricsHub } from './metrics-link.js'
import { urlOf } from '../app.js'
import { DEFAULTS } from '../config/schema.js'
import { Distributor } from './distributor.js'
import { isMessage, type ClosingMessage, type FailedMessage, type ReadyMessage, type RetireMessage } from './messages.js'

/** Start failures in a row, on every slot, after which the primary exits 1. */
export const MAX_START_FAILURES = 5

/** First restart delay; the cap is 30 × it. */
const backoffBase = (c: ConfigFile): number => c.workerRestartBackoffMs ?? DEFAULTS.workerRestartBackoffMs

/** One of the N places a worker runs in; its replacement takes the same slot. */
interface Slot {
  index: number
  worker: Worker
  /** whether `worker` told it listens */
  ready: boolean
  /** consecutive workers of this slot that exited before they were ready */
  failures: number
  /** consecutive restarts, for the backoff; reset when a worker stayed ready for the cap */
  restarts: number
  /** when `worker` got ready */
  readyAt: number
  reason?: string
  timer?: NodeJS.Timeout
}

/** Resolves when `worker` is listening; rejects (with its own reason if it sent one) if it exits first. */
function whenReady(worker: Worker): Promise<ReadyMessage> {
  return new Promise((resolve, reject) => {
    let reason: string | undefined
    const onMessage = (m: unknown) => {
      if (isMessage<FailedMessage>(m, 'failed')) reason = m.reason
      if (!isMessage<ReadyMessage>(m, 'ready')) return
      worker.off('message', onMessage)
      worker.off('exit', onExit)
      resolve(m)
    }
    // A message the worker sent just before exiting may be read in the same turn as its exit.
    const onExit = (code: number | null, signal: string | null) =>
      setImmediate(() => {
        worker.off('message', onMessage)
        reject(new Error(`worker ${worker.process.pid}: ${reason ?? `exited before it was ready (${signal ?? code})`}`))
      })
    worker.on('message', onMessage)
    worker.once('exit', onExit)
  })
}

function whenExited(worker: Worker): Promise<number> {
  if (worker.process.exitCode !== null || worker.process.signalCode !== null) return Promise.resolve(worker.process.exitCode ?? 1)
  return new Promise((resolve) => worker.once('exit', (code: number | null) => resolve(code ?? 1)))
}

/** The primary's two ports, for one `listen` / `admin` address pair. */
class Ports {
  readonly proxy: Distributor
  readonly admin: Distributor
  proxyUrl = ''
  adminUrl = ''
  /** workers forked to serve these ports and not exited */
  readonly workers = new Set<Worker>()

  constructor(
    readonly config: ConfigFile,
    log: Logger,
  ) {
    const onError = (port: string) => (err: Error) => log.error({ port, err: err.message }, `the ${port} port: ${err.message}`)
    this.proxy = new Distributor('proxy', onError('proxy'))
    this.admin = new Distributor('admin', onError('admin'))
  }

  /** whether `next` names the same addresses (then its workers share these ports) */
  same(next: ConfigFile): boolean {
    const key = (c: ConfigFile) => JSON.stringify([Ports.listen(c), Ports.adminListen(c)])
    return key(next) === key(this.config)
  }

  static listen(c: ConfigFile) {
    const l = { ...DEFAULTS.listen, ...c.listen }
    return { host: l.host, port: l.port }
  }

  static adminListen(c: ConfigFile) {
    const a = { ...DEFAULTS.admin, ...c.admin }
    return { host: a.host, port: a.port }
  }

  /** Binds both ports, or neither: rejects with the address that could not be bound. */
  async listen(): Promise<void> {
    const l = Ports.listen(this.config)
    const a = Ports.adminListen(this.config)
    // net's message names the address: `listen EADDRINUSE: address already in use 127.0.0.1:8080`
    const proxy = await this.proxy.listen(l.port, l.host)
    try {
      const admin = await this.admin.listen(a.port, a.host)
      this.adminUrl = urlOf(a.host, admin.port)
    } catch (err) {
      this.proxy.close()
      throw err
    }
    this.proxyUrl = urlOf(l.host, proxy.port, this.config.listen?.tls === undefined ? 'http' : 'https')
  }

  add(w: Worker): void {
    this.proxy.add(w)
    this.admin.add(w)
  }

  remove(w: Worker): void {
    this.proxy.remove(w)
    this.admin.remove(w)
  }

  close(): void {
    this.proxy.close()
    this.admin.close()
  }
}

export async function runPrimary(configPath: string, config: ConfigFile, count: number, log: Logger): Promise<number> {
  const store = (config.store?.type ?? 'memory') === 'memory' ? new MemoryStore() : null
  /** the workers alive now (a crashed one's replacement included) */
  const live = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined)
  const answer = store ? serveStore(store, live) : null
  /** workers being replaced or stopped on purpose: their exit is not a crash */
  const leaving = new Set<Worker>()
  // A SIGHUP that replaces the workers applies the file's new backoff to later restarts.
  let base = backoffBase(config)
  const cap = () => 30 * base
  let stopping = false
  let started = false
  /** settles the primary's exit code: on a stop signal, or when workers crash-loop */
  let finish: (code: number) => void = () => {}
  const done = new Promise<number>((resolve) => (finish = resolve))

  // `/metrics` on any worker shows the group: the primary sums the workers' counters and keeps those of the dead.
  const hub = new MetricsHub({
    workers: live,
    label: (w) => {
      const slot = slots.find((s) => s.worker === w)
      return slot === undefined ? undefined : String(slot.index + 1)
    },
  })
  /** the ports new workers serve; a SIGHUP with a new address replaces them */
  let ports = new Ports(config, log)
  /** which ports each live worker serves */
  const portsOf = new Map<Worker, Ports>()
  const fork = (): Worker => {
    const w = cluster.fork()
    if (answer) w.on('message', (m: unknown) => answer(w, m))
    hub.attach(w)
    const mine = ports
    portsOf.set(w, mine)
    mine.workers.add(w)
    // A worker that stops (SIGTERM, retire) says so: it gets no new connection from then on.
    w.on('message', (m: unknown) => {
      if (!isMessage<ClosingMessage>(m, 'closing')) return
      mine.remove(w)
      // Stopping, and no worker takes connections any more: the ports are refused from now on.
      if (stopping && !mine.proxy.serving && !mine.admin.serving) mine.close()
    })
    w.once('exit', () => {
      portsOf.delete(w)
      mine.workers.delete(w)
      // Ports a reload left behind close with their last worker.
      if (mine !== ports && mine.workers.size === 0) mine.close()
    })
    return w
  }
  /** `w` is ready: it takes connections from now on */
  const serve = (w: Worker) => {
    if (!stopping) portsOf.get(w)?.add(w)
  }

  /** Makes `w` the worker of `slot` and watches it: ready resets the failure count, an exit restarts it. */
  const watch = (slot: Slot, w: Worker, ready: boolean) => {
    Object.assign(slot, { worker: w, ready, readyAt: performance.now() })
    if (ready) slot.failures = 0
    w.on('message', (m: unknown) => {
      if (isMessage<FailedMessage>(m, 'failed')) slot.reason = m.reason
      if (isMessage<ReadyMessage>(m, 'ready') && slot.worker === w) {
        if (started) {
          log.info({ slot: slot.index, worker: w.process.pid }, `worker ${w.process.pid} is ready`)
          serve(w)
        }
        slot.ready = true
        slot.readyAt = performance.now()
        slot.failures = 0
        slot.reason = undefined
      }
    })
    // setImmediate: the reason the worker sent just before exiting may be read in the same turn.
    w.once('exit', (code, signal) => setImmediate(() => onExit(code, signal)))
    const onExit = (code: number | null, signal: string | null) => {
      if (!started || stopping || leaving.has(w) || slot.worker !== w) return
      const how = signal ?? `code ${code}`
      const ready = slot.ready
      slot.ready = false
      if (!ready) slot.failures++
      if (ready && performance.now() - slot.readyAt >= cap()) slot.restarts = 0
      if (slots.every((s) => s.failures >= MAX_START_FAILURES)) {
        const reason = slot.reason ?? `exited before it was ready (${how})`
        log.error({ reason }, `every worker failed at start ${MAX_START_FAILURES} times in a row; exiting`)
        process.stderr.write(`switchyard: workers keep failing at start (${MAX_START_FAILURES} times in a row each): ${reason}\n`)
        return stopAll(1)
      }
      const delayMs = Math.min(base * 2 ** slot.restarts, cap())
      slot.restarts++
      const what = ready ? 'died' : `failed at start (${slot.failures} in a row${slot.reason ? `: ${slot.reason}` : ''})`
      log.warn({ slot: slot.index, worker: w.process.pid, exit: how, delayMs, failures: slot.failures }, `worker ${w.process.pid} ${what}; restarting in ${delayMs} ms`)
      // Not unref'd: with every worker down this timer is what keeps the primary alive.
      slot.timer = setTimeout(() => run(slot), delayMs)
    }
  }
  const run = (slot: Slot) => watch(slot, fork(), false)

  // The ports first: a taken port fails the start at once, before any worker is forked.
  // Connections that arrive meanwhile wait here until the workers are ready.
  try {
    await ports.listen()
  } catch (err) {
    process.stderr.write(`switchyard: cannot start: ${(err as Error).message}\n`)
    await store?.close()
    return 1
  }
  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({ index, worker: undefined as unknown as Worker, ready: false, failures: 0, restarts: 0, readyAt: 0 }))
  for (const slot of slots) run(slot)
  try {
    await Promise.all(slots.map((s) => whenReady(s.worker)))
  } catch (err) {
    process.stderr.write(`switchyard: cannot start: ${(err as Error).message}\n`)
    stopping = true
    for (const w of live()) w.process.kill('SIGKILL')
    ports.close()
    await store?.close()
    return 1
  }
  started = true
  for (const slot of slots) serve(slot.worker)

  /**
   * Stops every worker (SIGTERM: each drains) and settles with `code`, or 1 if a serving worker
   * cut requests. A worker still starting has served nothing: how it ends does not count.
   */
  function stopAll(code: number) {
    stopping = true
    for (const s of slots) clearTimeout(s.timer)
    const serving = new Set([...leaving, ...slots.filter((s) => s.ready).map((s) => s.worker)])
    const all = live()
    for (const w of all) w.process.kill('SIGTERM')
    void Promise.all(all.map((w) => whenExited(w).then((c) => (serving.has(w) ? c : 0)))).then(async (codes) => {
      ports.close()
      await store?.close()
      finish(code === 0 && codes.every((c) => c === 0) ? 0 : 1)
    })
  }

  let reloading: Promise<void> | null = null
  const reload = async () => {
    const { config: next, problems } = await loadConfigFile(configPath)
    if (problems.length > 0) {
      for (const p of problems) process.stderr.write(formatProblem(p) + '\n')
      return void log.warn('SIGHUP: the config has problems; nothing changed')
    }
    if ((next.store?.type ?? 'memory') !== (config.store?.type ?? 'memory')) {
      return void log.warn('SIGHUP: changing the store type needs a restart; nothing changed')
    }
    if (!ports.same(next)) {
      const moved = new Ports(next, log)
      try {
        await moved.listen()
      } catch (err) {
        return void log.warn(`SIGHUP: ${(err as Error).message}; nothing changed`)
      }
      if (stopping) return void moved.close()
      const old = ports
      ports = moved
      log.info({ proxy: moved.proxyUrl, admin: moved.adminUrl }, `SIGHUP: new workers serve proxy ${moved.proxyUrl} admin ${moved.adminUrl}`)
      if (old.workers.size === 0) old.close()
    }
    base = backoffBase(next)
    log.info(`SIGHUP: replacing ${count} workers one by one`)
    for (const slot of slots) {
      if (stopping) return
      // A worker being restarted reads the file anew anyway: nothing to replace in its slot.
      if (!slot.ready) continue
      const old = slot.worker
      const fresh = fork()
      try {
        await whenReady(fresh)
      } catch (err) {
        return void log.warn(`SIGHUP: a new worker failed (${(err as Error).message}); the remaining old workers stay`)
      }
      if (stopping) return
      leaving.add(old)
      clearTimeout(slot.timer) // the old worker may have died meanwhile: the fresh one replaces it
      // The fresh worker takes over the slot: from now on its exit is watched like any other.
      watch(slot, fresh, true)
      // It takes connections before the old one gets no more: none waits, none is refused.
      serve(fresh)
      portsOf.get(old)?.remove(old)
      const retire: RetireMessage = { sy: 'retire' }
      if (old.isConnected()) old.send(retire)
      await whenExited(old)
    }
    log.info('SIGHUP: reload done')
  }
  process.on('SIGHUP', () => {
    if (reloading) return void log.warn('SIGHUP: a reload is already running')
    reloading = reload().finally(() => (reloading = null))
  })

  logReady(log, { proxy: ports.proxyUrl, admin: ports.adminUrl, store: config.store?.type ?? 'memory', workers: count })
  const stop = (signal: string) => {
    if (stopping) return
    log.info(`${signal}: stopping ${live().length} workers`)
    stopAll(0)
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  return done
}
