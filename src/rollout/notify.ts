/**
 * Rollout webhooks: a rollout may name `notify: [{url, events, secret, timeoutMs}]`; each
 * event it has (started, step, analysis, paused, resumed, promoted, aborted, failed) is POSTed
 * there as JSON, signed with HMAC-SHA256 when a secret is set, retried 3 times with backoff.
 * Off every hot path: `notify` returns at once, deliveries run on their own, a failure is
 * logged and counted and never blocks or fails the rollout. Delivery is at most once per
 * instance that made the change: a driver that dies between its write and the POST loses that
 * event (the rollout's history and the audit log keep it).
 *
 * Sent with Node's own fetch, which Node loads only when the first webhook goes out: an
 * instance that never sends one does not carry a second HTTP client beside the data plane's pools.
 */
import { createHmac } from 'node:crypto'
import type { Logger } from '../log.js'
import type { Notify, Rollout, RolloutEvent } from './schema.js'

export interface NotifierOptions {
  log: Logger
  /** waits before the 2nd, 3rd and 4th attempt (default 500, 2000, 8000 ms) */
  retryDelaysMs?: number[]
  /** deliveries in progress or waiting, beyond which new ones are dropped and counted (default 100) */
  maxPending?: number
}

/** Events sent when a `notify` entry does not list its own: all but the per-interval `analysis`. */
export const DEFAULT_EVENTS: RolloutEvent[] = ['started', 'step', 'paused', 'resumed', 'promoted', 'aborted', 'failed']

export class Notifier {
  /** deliveries that reached a 2xx */
  sent = 0
  /** deliveries given up after every attempt */
  failed = 0
  /** deliveries dropped because too many were pending */
  dropped = 0
  private pending = 0
  private closed = false
  private readonly timers = new Set<NodeJS.Timeout>()

  constructor(private readonly opts: NotifierOptions) {}

  /** Sends `event` of `r` to each of its `notify` entries that wants it; returns at once. */
  notify(r: Rollout, event: RolloutEvent, message: string): void {
    if (this.closed) return
    const targets = (r.spec.notify ?? []).filter((n) => (n.events ?? DEFAULT_EVENTS).includes(event))
    if (targets.length === 0) return
    const body = JSON.stringify({
      event,
      rollout: r.id,
      route: r.route,
      from: r.from,
      to: r.to,
      strategy: r.strategy,
      phase: r.phase,
      stepIndex: r.stepIndex,
      weight: r.weight,
      weights: { [r.from]: 100 - r.weight, [r.to]: r.weight },
      analysis: r.analysis,
      message,
      at: new Date().toISOString(),
    })
    for (const n of targets) {
      if (this.pending >= (this.opts.maxPending ?? 100)) {
        this.dropped++
        this.opts.log.warn({ rollout: r.id, event, url: n.url }, 'webhook dropped: too many deliveries pending')
        continue
      }
      this.pending++
      void this.deliver(n, event, r.id, body, 0).finally(() => this.pending--)
    }
  }

  /** Stops: pending retries are cancelled. */
  close(): void {
    this.closed = true
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
  }

  private async deliver(n: Notify, event: RolloutEvent, rollout: string, body: string, attempt: number): Promise<void> {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'switchyard', 'x-switchyard-event': event }
    if (n.secret !== undefined) headers['x-switchyard-signature'] = `sha256=${createHmac('sha256', n.secret).update(body).digest('hex')}`
    const timeoutMs = n.timeoutMs ?? 5_000
    let cause: string
    try {
      // No redirects followed: a webhook that answers 3xx has not taken the event.
      const res = await fetch(n.url, { method: 'POST', headers, body, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) })
      // The answer's body is not read: only its status counts, and a large one must not be buffered.
      await res.body?.cancel()
      if (res.status >= 200 && res.status < 300) {
        this.sent++
        return
      }
      cause = `answered ${res.status}`
    } catch (err) {
      // fetch says only "fetch failed" and puts what happened (ECONNREFUSED, ...) in `cause`.
      const e = err as Error & { cause?: { message?: unknown } }
      cause = typeof e.cause?.message === 'string' ? e.cause.message : e.message
    }
    const delays = this.opts.retryDelaysMs ?? [500, 2_000, 8_000]
    if (attempt >= delays.length || this.closed) {
      this.failed++
      this.opts.log.warn({ rollout, event, url: n.url, attempts: attempt + 1, cause }, 'webhook failed; giving up')
      return
    }
    this.opts.log.debug({ rollout, event, url: n.url, attempt: attempt + 1, cause }, 'webhook failed; retrying')
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t)
        resolve()
      }, delays[attempt])
      this.timers.add(t)
    })
    if (this.closed) return
    return this.deliver(n, event, rollout, body, attempt + 1)
  }
}
