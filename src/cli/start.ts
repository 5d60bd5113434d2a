/**
 * `switchyard start --config FILE [--workers N|auto]`: loads and checks the config (exit 1
 * before listening on any problem), runs the instance, and handles signals: SIGTERM/SIGINT stop
 * gracefully (exit 0 when every in-flight request finished, 1 when shutdownTimeoutMs cut some).
 */
import { startSwitchyard } from '../app.js'
import { DEFAULTS } from '../config/schema.js'
import { loadConfigFile } from '../config/load.js'
import { formatProblem } from '../errors.js'
import { parseArgs, UsageError } from './args.js'

export async function start(args: string[]): Promise<number> {
  let configPath: string | undefined
  try {
    const parsed = parseArgs(args, ['config', 'workers'])
    configPath = parsed.options.get('config') ?? parsed.positional[0]
    const workers = parsed.options.get('workers')
    if (workers !== undefined && workers !== '1') {
      process.stderr.write('switchyard: --workers other than 1 is not supported yet; run one process per core behind SO_REUSEPORT or a load balancer\n')
      return 2
    }
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
  let app
  try {
    app = await startSwitchyard(config)
  } catch (err) {
    process.stderr.write(`switchyard: cannot start: ${(err as Error).message}\n`)
    return 1
  }
  const timeoutMs = config.shutdownTimeoutMs ?? DEFAULTS.shutdownTimeoutMs
  const running = app
  // Handlers go in before the ready line: whoever waits for that line may signal at once.
  const exitCode = new Promise<number>((resolve) => {
    let stopping = false
    const stop = (signal: string) => {
      if (stopping) return
      stopping = true
      process.stdout.write(`switchyard: ${signal}: finishing in-flight requests (up to ${timeoutMs} ms)\n`)
      void running.close(timeoutMs).then((finished) => {
        process.stdout.write(finished ? 'switchyard: stopped\n' : 'switchyard: stopped; shutdownTimeoutMs cut in-flight requests\n')
        resolve(finished ? 0 : 1)
      })
    }
    process.on('SIGTERM', () => stop('SIGTERM'))
    process.on('SIGINT', () => stop('SIGINT'))
    // SIGHUP must not kill the proxy (its default action); reload of static parts is not built yet.
    process.on('SIGHUP', () => process.stdout.write('switchyard: SIGHUP: config reload is not supported yet; nothing changed\n'))
  })
  process.stdout.write(`switchyard proxy ${app.proxyUrl} admin ${app.adminUrl} store ${config.store?.type ?? 'memory'}\n`)
  return exitCode
}
