/**
 * `switchyard start --config FILE [--workers N|auto]`: loads and checks the config (exit 1
 * before listening on any problem), runs the instance, and handles signals: SIGTERM/SIGINT stop
 * gracefully (exit 0 when every in-flight request finished, 1 when shutdownTimeoutMs cut some).
 * With `--workers N` the process becomes the primary of N workers (cli/cluster.ts), each of
 * which runs this same command as an instance.
 */
import cluster from 'node:cluster'
import { availableParallelism } from 'node:os'
import { startSwitchyard, type App } from '../app.js'
import { loadConfigFile } from '../config/load.js'
import { formatProblem } from '../errors.js'
import { createLogger } from '../log.js'
import { IpcStore } from '../store/ipc.js'
import { parseArgs, UsageError } from './args.js'
import { runPrimary, type ReadyMessage } from './cluster.js'

/** `--workers N|auto` → a count; auto = one per core. */
function workerCount(value: string | undefined): number {
  if (value === undefined) return 1
  if (value === 'auto') return availableParallelism()
  if (!/^[0-9]{1,3}$/.test(value) || Number(value) < 1) throw new UsageError(`--workers must be a number >= 1 or "auto", not "${value}"`)
  return Number(value)
}

export async function start(args: string[]): Promise<number> {
  let configPath: string | undefined
  let workers = 1
  try {
    const parsed = parseArgs(args, ['config', 'workers'])
    configPath = parsed.options.get('config') ?? parsed.positional[0]
    workers = workerCount(parsed.options.get('workers'))
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`switchyard start: ${err.message}\n`)
      return 2
    }
    throw err
  }
  if (configPath === undefined) {
    process.stderr.write('usage: switchyard start --config FILE [--workers N|auto]\n')
    return 2
  }
  const { config, problems } = await loadConfigFile(configPath)
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(formatProblem(p) + '\n')
    return 1
  }
  if (workers > 1 && cluster.isPrimary) return runPrimary(configPath, config, workers)
  let app
  try {
    // A worker with the memory store reaches the primary's state over IPC.
    const store = cluster.isWorker && (config.store?.type ?? 'memory') === 'memory' ? new IpcStore() : undefined
    app = await startSwitchyard(config, { store, logger: createLogger() })
  } catch (err) {
    process.stderr.write(`switchyard: cannot start: ${(err as Error).message}\n`)
    return 1
  }
  const running = app
  // Handlers go in before the ready line: whoever waits for that line may signal at once.
  const exitCode = new Promise<number>((resolve) => {
    let stopping = false
    const stop = (signal: string, closeIdle = true) => {
      if (stopping) return
      stopping = true
      process.stdout.write(`switchyard: ${signal}: finishing in-flight requests\n`)
      void running.close(undefined, { closeIdle }).then((finished) => {
        process.stdout.write(finished ? 'switchyard: stopped\n' : 'switchyard: stopped; shutdownTimeoutMs cut in-flight requests\n')
        resolve(finished ? 0 : 1)
      })
    }
    process.on('SIGTERM', () => stop('SIGTERM'))
    process.on('SIGINT', () => stop('SIGINT'))
    // A worker being replaced on reload: another worker takes new connections, so idle ones
    // are left to end by themselves rather than closed under a client about to use them.
    process.on('message', (m: unknown) => {
      if ((m as { sy?: string } | null)?.sy === 'retire') stop('reload', false)
    })
    // SIGHUP: a single process reloads in place, one reload at a time. In a worker it is
    // ignored (the primary reloads by replacing workers), so a terminal hang-up cannot kill it.
    let reloads = Promise.resolve()
    process.on('SIGHUP', () => {
      if (cluster.isWorker) return
      reloads = reloads.then(() => reloadInPlace(configPath!, running))
    })
  })
  if (cluster.isWorker) {
    // The primary prints the ready line once every worker listens; a worker ends itself when
    // it has stopped, since its IPC channel would keep it alive.
    const ready: ReadyMessage = { sy: 'ready', proxyUrl: app.proxyUrl, adminUrl: app.adminUrl }
    process.send!(ready)
    return exitCode.then((code) => process.exit(code))
  }
  process.stdout.write(`switchyard proxy ${app.proxyUrl} admin ${app.adminUrl} store ${config.store?.type ?? 'memory'}\n`)
  return exitCode
}

/** SIGHUP without workers: re-read the file and apply its static parts in place (App.reload). */
async function reloadInPlace(configPath: string, app: App): Promise<void> {
  const say = (line: string): void => void process.stdout.write(`switchyard: SIGHUP: ${line}\n`)
  const { config, problems } = await loadConfigFile(configPath)
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(formatProblem(p) + '\n')
    return say('the config has problems; nothing changed')
  }
  try {
    const changes = await app.reload(config)
    say(changes.length > 0 ? `reloaded: ${changes.join('; ')}` : 'reloaded: no static part changed')
    say('upstreams, routes and flags live in the store: change them through the admin API')
  } catch (err) {
    say((err as Error).message)
  }
}
