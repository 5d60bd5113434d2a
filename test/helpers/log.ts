/** A real pino logger that keeps its lines in memory, so tests can assert what was logged. */
import { Writable } from 'node:stream'
import { createLogger, type Logger, type LogLevel } from '../../src/log.js'

export interface MemoryLog {
  logger: Logger
  /** every line so far, parsed */
  lines(): Record<string, unknown>[]
  /** lines whose `msg` contains `text` */
  find(text: string): Record<string, unknown>[]
}

export function memoryLogger(level: LogLevel = 'debug'): MemoryLog {
  const lines: Record<string, unknown>[] = []
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      done()
    },
  })
  const logger = createLogger({ level, destination })
  return {
    logger,
    lines: () => lines,
    find: (text) => lines.filter((l) => typeof l.msg === 'string' && l.msg.includes(text)),
  }
}
