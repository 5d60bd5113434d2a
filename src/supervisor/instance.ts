/**
 * One instance as a process: a plain `switchyard start`, or one worker of `--workers N`. Runs
 * the App and maps signals onto it: SIGTERM/SIGINT stop gracefully (exit 0 when every in-flight
 * request finished, 1 when shutdownTimeoutMs cut some); SIGHUP reloads the file's static parts
 * in place (a single process; a worker ignores it, the primary replaces workers instead); a
 * worker asked to retire stops like SIGTERM but leaves idle keep-alive connections alone.
 */
import cluster from 'node:cluster'
import type { Socket } from 'node:net'
import { startSwitchyard, type App } from '../app.js'
import { loadConfigFile } from '../config/load.js'
import type { ConfigFile } from '../config/schema.js'
import { formatProblem } from '../errors.js'
import { logReady, type Logger } from '../log.js'
import { IpcStore } from '../store/ipc.js'
import { WorkerMetricsLink } from './metrics-link.js'
import { isMessage, type ClosingMessage, type ConnectionMessage, type ConnectionTakenMessage, type FailedMessage, type ReadyMessage, type RetireMessage } from './messages.js'

/** Runs the instance until it stops; resolves with the exit code. A worker exits by itself. */
export async function runInstance(configPath: string, config: ConfigFile, log: Logger): Promise<number> {
  let app: App
  // A worker's /metrics answers for the whole process group (counters summed over the workers).
  const metricsLink = cluster.isWorker ? new WorkerMetricsLink() : undefined
  try {
    // A worker with the memory store reaches the primary's state over IPC.
    const store = cluster.isWorker && (config.store?.type ?? 'memory') === 'memory' ? new IpcStore() : undefined
    // A worker listens on nothing: the primary holds the ports and hands it connections.
    app = await startSwitchyard(config, { store, logger: log, metricsLink, handedConnections: cluster.isWorker })
  } catch (err) {
    return failedStart((err as Error).message)
  }
  const running = app
  // Handlers go in before the ready line: whoever waits for that line may signal at once.
  const exitCode = new Promise<number>((resolve) => {
    let stopping = false
    // A worker tells the primary when it stops taking connections, so the primary closes its
    // ports once no worker takes any (SIGTERM), instead of handing them to a worker that refuses.
    const stoppedAccepting = cluster.isWorker ? () => void process.send?.({ sy: 'closing' } satisfies ClosingMessage) : undefined
    const stop = (why: string, retire = false) => {
      if (stopping) return
      stopping = true
      log.info({ signal: why }, `${why}: stopping`)
      // A retiring worker gets no new connection (the primary hands them to the others), so it
      // needs no shutdownDelayMs; the instance stays ready (a probe on a connection it took just
      // before says 200), and idle keep-alive connections are left to end by themselves.
      const opts = retire ? { closeIdle: false, delayMs: 0, keepReady: true, stoppedAccepting } : { stoppedAccepting }
      void running.close(undefined, opts).then((finished) => {
        if (finished) log.info('stopped')
        else log.warn('stopped; shutdownTimeoutMs cut in-flight requests')
        resolve(finished ? 0 : 1)
      })
    }
    process.on('SIGTERM', () => stop('SIGTERM'))
    process.on('SIGINT', () => stop('SIGINT'))
    // A worker being replaced on reload: another worker takes new connections, so idle ones
    // are left to end by themselves rather than closed under a client about to use them.
    process.on('message', (m: unknown, socket?: Socket) => {
      if (isMessage<RetireMessage>(m, 'retire')) stop('reload', true)
      if (isMessage<ConnectionMessage>(m, 'conn') && socket !== undefined) {
        const taken = running.accept(m.port, socket)
        // Not taken: the primary still holds the connection and gives it to another worker;
        // closing this copy ends nothing.
        if (!taken) socket.destroy()
        const answer: ConnectionTakenMessage = { sy: 'conn-taken', id: m.id, taken }
        process.send!(answer)
      }
    })
    // SIGHUP: a single process reloads in place, one reload at a time. In a worker it is
    // ignored (the primary reloads by replacing workers), so a terminal hang-up cannot kill it.
    let reloads = Promise.resolve()
    process.on('SIGHUP', () => {
      if (cluster.isWorker) return
      reloads = reloads.then(() => reloadInPlace(configPath, running, log))
    })
  })
  if (cluster.isWorker) {
    // The primary listens and prints the ready line once every worker is ready; a worker ends
    // itself when it has stopped, since its IPC channel would keep it alive.
    const ready: ReadyMessage = { sy: 'ready' }
    process.send!(ready)
    return exitCode.then(async (code) => {
      // Its last counts, so the group's sums keep what it served while draining.
      await metricsLink?.final().catch(() => {})
      return process.exit(code)
    })
  }
  logReady(log, { proxy: app.proxyUrl, admin: app.adminUrl, store: config.store?.type ?? 'memory' })
  return exitCode
}

/**
 * The instance cannot start: exit 1. A single process prints `switchyard: cannot start: REASON`
 * on stderr; a worker sends the reason to the primary (which logs it, and prints it if it gives
 * up) and exits at once.
 */
export function failedStart(reason: string): Promise<number> | number {
  if (!cluster.isWorker) {
    process.stderr.write(`switchyard: cannot start: ${reason}\n`)
    return 1
  }
  if (!process.connected) return process.exit(1)
  const failed: FailedMessage = { sy: 'failed', reason }
  return new Promise<number>(() => process.send!(failed, () => process.exit(1)))
}

/** SIGHUP without workers: re-read the file and apply its static parts in place (App.reload). */
async function reloadInPlace(configPath: string, app: App, log: Logger): Promise<void> {
  const { config, problems } = await loadConfigFile(configPath)
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(formatProblem(p) + '\n')
    return void log.warn('SIGHUP: the config has problems; nothing changed')
  }
  try {
    const changes = await app.reload(config)
    log.info(changes.length > 0 ? `SIGHUP: reloaded: ${changes.join('; ')}` : 'SIGHUP: reloaded: no static part changed')
    log.info('SIGHUP: upstreams, routes and flags live in the store: change them through the admin API')
  } catch (err) {
    log.warn(`SIGHUP: ${(err as Error).message}`)
  }
}
