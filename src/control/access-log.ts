/**
 * The access log: requests sampled by the data plane (`accessLog.sample`) arrive on a
 * diagnostics channel and are only queued there; a timer writes them as JSON lines (`msg:
 * "access"`) every 250 ms, so the request path never formats or writes a line. At most
 * MAX_QUEUED wait between two writes: beyond that they are counted and the count is logged.
 * Lines carry the path without the query string unless `accessLog.query` is on: query strings
 * often carry tokens and personal data, and a log is read by more people than the API is. The
 * query is cut here, when the line is written, so the request path pays nothing for it.
 */
import diagnostics from 'node:diagnostics_channel'
import { ACCESS, type AccessEvent } from '../dataplane/events.js'
import type { Logger } from '../log.js'

const FLUSH_MS = 250
const MAX_QUEUED = 5_000

/** Read at every write, so a reload can change them in place. */
export interface AccessLogOptions {
  /** log the query string too (accessLog.query; default false) */
  query: boolean
}

/** The request target as logged: without the query (and a fragment, if one was sent) unless `query`. */
export function loggedUrl(url: string, query: boolean): string {
  if (query) return url
  const q = url.indexOf('?')
  const h = url.indexOf('#')
  const end = q < 0 ? h : h < 0 ? q : Math.min(q, h)
  return end < 0 ? url : url.slice(0, end)
}

/** Subscribes for the data plane `scope`; the returned function flushes and unsubscribes. */
export function startAccessLog(scope: object, log: Logger, opts: AccessLogOptions = { query: false }): () => void {
  let queue: AccessEvent[] = []
  let dropped = 0
  const onAccess = (message: unknown): void => {
    const e = message as AccessEvent
    if (e.scope !== scope) return
    if (queue.length >= MAX_QUEUED) dropped++
    else queue.push(e)
  }
  const flush = (): void => {
    const batch = queue
    queue = []
    for (const e of batch) {
      log.info(
        { type: 'access', at: new Date(e.time).toISOString(), method: e.method, url: loggedUrl(e.url, opts.query), host: e.host, status: e.status, route: e.route, upstream: e.upstream, target: e.target, ms: Math.round(e.ms * 1000) / 1000, client: e.client },
        'access',
      )
    }
    if (dropped > 0) {
      log.warn({ dropped }, `${dropped} access log lines dropped (more than ${MAX_QUEUED} in ${FLUSH_MS} ms: lower accessLog.sample)`)
      dropped = 0
    }
  }
  const timer = setInterval(flush, FLUSH_MS)
  timer.unref()
  diagnostics.subscribe(ACCESS, onAccess)
  return () => {
    clearInterval(timer)
    diagnostics.unsubscribe(ACCESS, onAccess)
    flush()
  }
}
