/**
 * Rollout webhooks: a rollout may name `notify: [{url, events, secret, timeoutMs}]`; each
 * event it has (started, step, analysis, paused, resumed, promoted, aborted, failed) is POSTed
 * there as JSON, signed with HMAC-SHA256 when a secret is set, retried 3 times with backoff.
 * Off every hot path: `notify` returns at once, deliveries run on their own, a failure is
 * logged and counted and never blocks or fails the rollout. Delivery is at most once per
 * instance that made the change: a driver that dies between its write and the POST loses that
 * event (the rollout's history and the audit log keep it).
 *
 * Signed like Stripe's and Slack's webhooks: each attempt carries `X-Switchyard-Timestamp`
 * (unix seconds) and `X-Switchyard-Signature: sha256=HMAC(secret, timestamp + "." + body)`, so
 * a receiver that checks the timestamp is recent refuses a captured request replayed later.
 *
 * No link-local target (cloud metadata, see webhook-url.ts) is ever connected to: the socket's
 * own `lookup` refuses a name with a link-local answer, and net connects to exactly the address
 * that lookup returned, so a name cannot resolve to a checked address first and to the metadata
 * address when the socket connects (DNS rebinding). An address written in the URL skips lookup
 * and is checked before connecting. Sent with undici (the data plane's client, so nothing more is
 * loaded) through an Agent of its own, made when the first webhook goes out.
 */
import { createHmac } from 'node:crypto'
import { lookup as dnsLookup } from 'node:dns/promises'
import { isIP, type LookupFunction } from 'node:net'
import { Agent, buildConnector } from 'undici'
import type { Logger } from '../log.js'
import type { Notify, Rollout, RolloutEvent } from './schema.js'
import { isLinkLocal, redactUrl } from './webhook-url.js'

/** A name's addresses, as `dns.promises.lookup(name, { all: true })` gives them. */
export type Resolve = (hostname: string) => Promise<{ address: string; family: number }[]>

/** A connection refused because its target is link-local: counted as failed at once, not retried. */
export class LinkLocalTarget extends Error {
  readonly code = 'ERR_WEBHOOK_LINK_LOCAL'
  constructor(hostname: string, address: string) {
    super(hostname === address ? `${address} is link-local; not connected` : `${hostname} resolves to link-local ${address}; not connected`)
  }
}

/** A net `lookup` that asks `resolve` and refuses every link-local answer. */
export function refusingLookup(resolve: Resolve): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname).then(
      (answers) => {
        const wanted = options.family === 4 || options.family === 6 ? answers.filter((a) => a.family === options.family) : answers
        const bad = wanted.find((a) => isLinkLocal(a.address))
        if (bad !== undefined) return callback(new LinkLocalTarget(hostname, bad.address), '', 0)
        if (wanted.length === 0) return callback(Object.assign(new Error(`${hostname}: no address`), { code: 'ENOTFOUND' }), '', 0)
        if (options.all === true) return (callback as unknown as (err: null, all: typeof wanted) => void)(null, wanted)
        callback(null, wanted[0]!.address, wanted[0]!.family)
      },
      (err: NodeJS.ErrnoException) => callback(err, '', 0),
    )
  }
}

export interface NotifierOptions {
  log: Logger
  /** waits before the 2nd, 3rd and 4th attempt (default 500, 2000, 8000 ms) */
  retryDelaysMs?: number[]
  /** deliveries in progress or waiting, beyond which new ones are dropped and counted (default 100) */
  maxPending?: number
  /** how webhook host names are resolved (default: the system's, dns.lookup); every answer is checked */
  resolve?: Resolve
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
  private agent: Agent | undefined

  constructor(private readonly opts: NotifierOptions) {}

  /** The webhooks' own connection pool, made at the first delivery. */
  private dispatcher(): Agent {
    if (this.agent !== undefined) return this.agent
    const connect = buildConnector({ lookup: refusingLookup(this.opts.resolve ?? ((h) => dnsLookup(h, { all: true }))) })
    this.agent = new Agent({
      connect: (options, callback) => {
        // An address in the URL is not looked up: checked here, before any socket exists.
        const host = options.hostname.replace(/^\[|\]$/g, '')
        if (isIP(host) !== 0 && isLinkLocal(host)) return callback(new LinkLocalTarget(host, host), null)
        return connect(options, callback)
      },
    })
    return this.agent
  }

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
        this.opts.log.warn({ rollout: r.id, event, url: redactUrl(n.url) }, 'webhook dropped: too many deliveries pending')
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
    // Deliveries under way finish (or time out); then the sockets go.
    void this.agent?.close().catch(() => {})
  }

  private async deliver(n: Notify, event: RolloutEvent, rollout: string, body: string, attempt: number): Promise<void> {
    // Signed per attempt: a retry 10 s later carries its own timestamp and stays fresh.
    const timestamp = String(Math.floor(Date.now() / 1000))
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'switchyard',
      'x-switchyard-event': event,
      'x-switchyard-timestamp': timestamp,
    }
    if (n.secret !== undefined) headers['x-switchyard-signature'] = signature(n.secret, timestamp, body)
    const url = redactUrl(n.url)
    const timeoutMs = n.timeoutMs ?? 5_000
    let cause: string
    try {
      const target = new URL(n.url)
      // No redirects followed (undici's request follows none): a webhook that answers 3xx has not taken the event.
      const res = await this.dispatcher().request({
        origin: target.origin,
        path: target.pathname + target.search,
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.timeout(timeoutMs),
      })
      // Only the status counts: the answer's body is thrown away, never buffered.
      await res.body.dump().catch(() => {})
      if (res.statusCode >= 200 && res.statusCode < 300) {
        this.sent++
        return
      }
      cause = `answered ${res.statusCode}`
    } catch (err) {
      if (err instanceof LinkLocalTarget) {
        // Asking again would get the same refusal: give up at once.
        this.failed++
        this.opts.log.warn({ rollout, event, url, attempts: attempt + 1, cause: err.message }, 'webhook refused: link-local target; giving up')
        return
      }
      cause = (err as Error).message
    }
    const delays = this.opts.retryDelaysMs ?? [500, 2_000, 8_000]
    if (attempt >= delays.length || this.closed) {
      this.failed++
      this.opts.log.warn({ rollout, event, url, attempts: attempt + 1, cause }, 'webhook failed; giving up')
      return
    }
    this.opts.log.debug({ rollout, event, url, attempt: attempt + 1, cause }, 'webhook failed; retrying')
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

/** `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`: what a receiver recomputes to check X-Switchyard-Signature. */
export function signature(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`
}
