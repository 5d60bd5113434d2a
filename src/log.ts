/**
 * The one logger of a process: pino, JSON lines with `time` (ISO 8601) and `level`, made once
 * at start (`cli/start.ts`) and passed down to whatever runs on the control side. The data
 * plane never logs: faults it sees are published on `node:diagnostics_channel` and logged by
 * a control-side listener, so the request path never formats or writes a line.
 *
 * Lines are written synchronously: control-plane events are rare (a state change, a Redis
 * reconnect, an ejection), and a line written just before `process.exit` must not be lost.
 */
import { createRequire } from 'node:module'
import { pino, type DestinationStream, type Logger } from 'pino'

export type { Logger }

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

export const LOG_FORMATS = ['json', 'pretty'] as const
export type LogFormat = (typeof LOG_FORMATS)[number]

export interface LoggerOptions {
  /** default `info` */
  level?: LogLevel
  /** `json` (default): one JSON object per line, for log shippers; `pretty`: coloured lines for a terminal */
  format?: LogFormat
  /** default: stdout */
  destination?: DestinationStream
}

/** The format of each logger createLogger made, for the ready line. */
const formats = new WeakMap<Logger, LogFormat>()

export function createLogger(opts: LoggerOptions = {}): Logger {
  const logger = pino(
    {
      level: opts.level ?? 'info',
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? (opts.format === 'pretty' ? prettyStream() : pino.destination({ fd: 1, sync: true })),
  )
  formats.set(logger, opts.format ?? 'json')
  return logger
}

/** What the ready line announces: where the instance listens and what it keeps its state in. */
export interface ReadyInfo {
  proxy: string
  admin: string
  store: string
  /** `--workers N`: the primary's line names how many */
  workers?: number
}

/**
 * The ready line, printed once the ports listen (by the primary alone with `--workers`): scripts
 * and tests wait for it. With the JSON format it is a log record like every other stdout line,
 * `{"level":"info",...,"msg":"ready","proxy":URL,"admin":URL,"store":TYPE}`, so a log shipper
 * never meets a line it cannot parse; with `pretty`, the plain line
 * `switchyard proxy URL admin URL store TYPE [workers N]`. Written whatever --log-level says:
 * whoever waits for it must not wait forever because info lines are off.
 */
export function logReady(log: Logger, info: ReadyInfo): void {
  if (formats.get(log) === 'pretty') {
    const workers = info.workers === undefined ? '' : ` workers ${info.workers}`
    process.stdout.write(`switchyard proxy ${info.proxy} admin ${info.admin} store ${info.store}${workers}\n`)
    return
  }
  // A child at level info writes through the same destination even when its parent is quieter.
  log.child({}, { level: 'info' }).info(info, 'ready')
}

/** pino-pretty, loaded only when asked for (a terminal, not production). Synchronous, like the JSON lines. */
function prettyStream(): DestinationStream {
  const pretty = createRequire(import.meta.url)('pino-pretty') as (opts: object) => DestinationStream
  return pretty({ sync: true, destination: 1, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', colorize: process.stdout.isTTY === true })
}

/** Writes nothing: the default for instances run in-process (tests, the demo's embedded parts). */
export const silentLogger: Logger = pino({ level: 'silent' })
