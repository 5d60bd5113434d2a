/**
 * `switchyard start --config FILE [--workers N|auto] [--log-level LEVEL] [--log-format json|pretty]`: loads and checks the
 * config (exit 1 before listening on any problem), then runs one instance (supervisor/instance.ts)
 * or, with `--workers N`, becomes the primary of N workers (supervisor/cluster.ts), each of
 * which runs this same command as an instance.
 */
import cluster from 'node:cluster'
import { availableParallelism } from 'node:os'
import { loadConfigFile } from '../config/load.js'
import { formatProblem } from '../errors.js'
import { createLogger, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../log.js'
import { runPrimary } from '../supervisor/cluster.js'
import { failedStart, runInstance } from '../supervisor/instance.js'
import { parseCommand, stringValue, usageError, type CommandSpec } from './args.js'

const COMMAND: CommandSpec = {
  name: 'start',
  usage: `usage: switchyard start --config FILE [--workers N|auto] [--log-level LEVEL] [--log-format json|pretty]
  --config FILE      the config file (YAML or JSON); may also be given as the only argument
  --workers N|auto   run N worker processes (auto = one per core); default 1, no workers
  --log-level LEVEL  ${LOG_LEVELS.join('|')}; default info
  --log-format F     json (default: one JSON object per line) or pretty (readable lines for a terminal)`,
  options: { config: { type: 'string' }, workers: { type: 'string' }, 'log-level': { type: 'string' }, 'log-format': { type: 'string' } },
}

export async function start(args: string[]): Promise<number> {
  const parsed = parseCommand(args, COMMAND)
  if (typeof parsed === 'number') return parsed
  const workers = workerCount(stringValue(parsed, 'workers'))
  if (typeof workers === 'string') return usageError(COMMAND, workers)
  const level = stringValue(parsed, 'log-level') ?? 'info'
  if (!(LOG_LEVELS as readonly string[]).includes(level)) return usageError(COMMAND, `--log-level must be one of ${LOG_LEVELS.join(', ')}, not ${JSON.stringify(level)}`)
  const format = stringValue(parsed, 'log-format') ?? 'json'
  if (!(LOG_FORMATS as readonly string[]).includes(format)) return usageError(COMMAND, `--log-format must be one of ${LOG_FORMATS.join(', ')}, not ${JSON.stringify(format)}`)
  const option = stringValue(parsed, 'config')
  const { positionals } = parsed
  if (positionals.length > (option === undefined ? 1 : 0)) return usageError(COMMAND, `unexpected argument ${JSON.stringify(positionals.at(-1))}`)
  const configPath = option ?? positionals[0]
  if (configPath === undefined || configPath === '') return usageError(COMMAND, 'no config file given')

  const { config, problems } = await loadConfigFile(configPath)
  if (problems.length > 0) {
    // A worker restarted after the file changed: the primary says why it could not start.
    if (cluster.isWorker) return failedStart(`the config has problems: ${problems.map(formatProblem).join('; ')}`)
    for (const p of problems) process.stderr.write(formatProblem(p) + '\n')
    return 1
  }
  const log = createLogger({ level: level as LogLevel, format: format as LogFormat })
  if (workers > 1 && cluster.isPrimary) return runPrimary(configPath, config, workers, log)
  return runInstance(configPath, config, log)
}

/** `--workers N|auto` → a count (auto = one per core), or what is wrong with it. */
function workerCount(value: string | undefined): number | string {
  if (value === undefined) return 1
  if (value === 'auto') return availableParallelism()
  if (!/^[0-9]{1,3}$/.test(value) || Number(value) < 1) return `--workers must be a number >= 1 or "auto", not "${value}"`
  return Number(value)
}
