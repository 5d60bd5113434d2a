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

export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? (opts.format === 'pretty' ? prettyStream() : pino.destination({ fd: 1, sync: true })),
  )
}

/** pino-pretty, loaded only when asked for (a terminal, not production). Synchronous, like the JSON lines. */
function prettyStream(): DestinationStream {
  const pretty = createRequire(import.meta.url)('pino-pretty') as (opts: object) => DestinationStream
  return pretty({ sync: true, destination: 1, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', colorize: process.stdout.isTTY === true })
}

/** Writes nothing: the default for instances run in-process (tests, the demo's embedded parts). */
export const silentLogger: Logger = pino({ level: 'silent' })
