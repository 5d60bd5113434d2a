/**
 * One proxied exchange: dispatches to a target through its undici pool with a raw handler, so
 * bodies stream both ways without buffering and backpressure flows from the client to the
 * upstream socket. Retries on another target of the same upstream: any method when
 * no connection could be made, idempotent methods on a reset before response headers when the
 * request body was not read.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import { ERRORS, errorBody, type ErrorCode } from '../errors.js'
import { pickTarget } from './balance.js'
import { publishAccess } from './events.js'
import { responseHeaders } from './headers.js'
import type { MirrorTap } from './mirror.js'
import { recordFault, recordResponse } from './outlier.js'
import type { Resources } from './resources.js'
import type { ProxyErrorCode } from './stats.js'
import type { Choice, CTarget, CUpstream } from './table.js'
import { classify, errorCodeFor, isIdempotent, tlsReason } from './upstream-error.js'

const ERROR_BODIES = new Map<ErrorCode, Buffer>(
  (Object.keys(ERRORS) as ErrorCode[]).map((code) => [code, Buffer.from(errorBody(code))]),
)

/** Writes a proxy-made error: `{"error":{"code","message"}}` with the catalogue's status. */
export function sendError(res: ServerResponse, code: ErrorCode, closeConnection = false): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const body = ERROR_BODIES.get(code)!
  const headers = ['content-type', 'application/json', 'content-length', String(body.length)]
  if (closeConnection) headers.push('connection', 'close')
  res.writeHead(ERRORS[code].status, headers)
  res.end(body)
}

export interface ExchangeContext {
  readonly res: Resources
  /** true once shutdown began: answers carry `Connection: close` */
  closing: boolean
  /** called once per request when its response closed (finished or cut) */
  readonly requestClosed: () => void
  /** listen.limits the exchange applies (read per request, so a reload applies to the next ones); none: no body idle bound */
  readonly limits?: { readonly bodyIdleTimeoutMs: number }
}

/** A request body cut by the proxy: over the route's maxBodyBytes, or idle past bodyIdleTimeoutMs. */
type BodyCut = 'PAYLOAD_TOO_LARGE' | 'REQUEST_TIMEOUT'

export class Exchange implements Dispatcher.DispatchHandler {
  private tried: CTarget[] | null = null
  private target: CTarget | null = null
  /** the current attempt's, once it reached a socket */
  private controller: Dispatcher.DispatchController | null = null
  /** the current attempt reached a socket: bytes may have left */
  private sent = false
  private clientGone = false
  private done = false
  private retriesLeft: number
  private readonly idempotent: boolean
  /** the current attempt is dispatched and not on a connection yet (counted in the upstream's `pending`) */
  private waiting = false
  /** set when the proxy cut the request body: what follows is bookkeeping, never an upstream's fault */
  private cut: BodyCut | null = null
  /** request body bytes seen so far (only while the body is watched) */
  private bodyBytes = 0
  /** the body watch (watchBody), for requests with a body under a bound only */
  private onBodyData: ((chunk: Buffer) => void) | null = null
  private onBodyEnd: (() => void) | null = null
  private idleTimer: NodeJS.Timeout | null = null

  constructor(
    private readonly ctx: ExchangeContext,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly choice: Choice,
    private readonly upstream: CUpstream,
    private readonly path: string,
    private readonly headers: string[],
    private readonly hasBody: boolean,
    private readonly t0: number,
    /** set only for a request that has a mirror copy: it is told the client's answer */
    private readonly tap: MirrorTap | null = null,
  ) {
    this.retriesLeft = upstream.retries
    this.idempotent = isIdempotent(req.method!)
    // One listener per request does both jobs: the server's bookkeeping and client-abort.
    res.once('close', this.onClientClose)
  }

  start(): void {
    const u = this.upstream
    // Envoy's circuit breakers: past a bound the answer is 503 at once, rather than one more
    // request queued on an upstream that is already behind. Two integer compares.
    const cb = u.breaker
    if (cb !== null) {
      const c = u.counters
      if (c.inflight >= cb.maxConcurrent) {
        c.overloaded.max_concurrent++
        return this.fail('UPSTREAM_OVERLOADED')
      }
      if (c.pending >= cb.maxPending) {
        c.overloaded.max_pending++
        return this.fail('UPSTREAM_OVERLOADED')
      }
    }
    const target = pickTarget(u, null)
    if (target === undefined) return this.fail('NO_HEALTHY_TARGET')
    if (this.hasBody) this.watchBody()
    this.send(target)
  }

  private send(target: CTarget): void {
    this.target = target
    this.sent = false
    this.controller = null
    target.rt.inflight++
    const u = this.upstream
    u.counters.inflight++
    u.counters.pending++
    this.waiting = true
    // pickTarget returns active targets only, and every active target has a pool.
    target.pool!.dispatch(
      {
        path: this.path,
        method: this.req.method as Dispatcher.HttpMethod,
        headers: this.headers,
        body: this.hasBody ? this.req : null,
        headersTimeout: u.headersTimeoutMs,
        bodyTimeout: u.bodyTimeoutMs,
      },
      this,
    )
  }

  private readonly onClientClose = (): void => {
    this.ctx.requestClosed()
    const sample = this.ctx.res.accessSample
    if (sample > 0 && Math.random() < sample) this.logAccess()
    if (this.onBodyData !== null) this.stopBody()
    if (this.done) return
    // The client went away mid-exchange: cancel the upstream request (its socket is destroyed).
    this.clientGone = true
    this.controller?.abort(new Error('client closed the connection'))
  }

  /** Hands one sampled request to the access log (written later, off this path). */
  private logAccess(): void {
    const { req, res } = this
    publishAccess({
      scope: this.ctx.res,
      time: Date.now(),
      method: req.method ?? '',
      url: req.url ?? '',
      host: req.headers.host ?? '',
      status: res.headersSent ? res.statusCode : 0,
      route: this.choice.stats.route,
      upstream: this.choice.stats.upstream,
      target: this.target?.rt.id ?? null,
      ms: performance.now() - this.t0,
      client: req.socket.remoteAddress ?? null,
    })
  }

  /** made on the first backpressure only: most responses never need it */
  private onDrain: (() => void) | null = null

  /** body bytes still to come when the upstream sent a Content-Length, else -1 */
  private remaining = -1

  // undici's handler interface (v2): one controller per attempt pauses, resumes and aborts it.

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.onConnection()
    if (this.clientGone) {
      controller.abort(new Error('client closed the connection'))
      return
    }
    this.controller = controller
    this.sent = true
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number): void {
    // 1xx (other than 101, which upgrades do not reach here) are not relayed.
    if (statusCode < 200) return
    if (this.clientGone) {
      controller.abort(new Error('client closed the connection'))
      return
    }
    // The raw header list, not the parsed object undici also makes: it keeps the upstream's
    // order, spelling and repeated headers. An HTTP/1.1 pool always gives Buffers.
    const raw = controller.rawHeaders as Buffer[]
    const headers: string[] = []
    this.remaining = responseHeaders(raw, headers)
    if (this.ctx.closing) headers.push('connection', 'close')
    this.res.writeHead(statusCode, headers)
    if (this.tap !== null) this.tap.primaryHeaders(statusCode, raw)
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.tap !== null) this.tap.primaryData(chunk)
    // The chunk that completes a known Content-Length ends the response in the same write:
    // one call through Node's http stack instead of two, on every small response.
    if (this.remaining >= 0) {
      this.remaining -= chunk.length
      if (this.remaining === 0) {
        this.res.end(chunk)
        return
      }
    }
    if (this.res.write(chunk)) return
    // Backpressure: the upstream socket stops being read until the client has taken this chunk.
    controller.pause()
    this.res.once('drain', (this.onDrain ??= () => this.controller?.resume()))
  }

  onResponseEnd(): void {
    this.settle()
    recordResponse(this.upstream, this.target!.rt, this.res.statusCode)
    this.choice.stats.record(this.res.statusCode, performance.now() - this.t0)
    if (!this.res.writableEnded) this.res.end()
    if (this.tap !== null) this.tap.primaryEnd(this.res.statusCode)
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    const target = this.target!
    this.settle()
    // The proxy cut the body itself (and answered the client): the abort is not the target's.
    if (this.cut !== null) return
    // No whole answer for the client: nothing to compare a copy with.
    if (this.tap !== null && (this.clientGone || this.res.headersSent)) this.tap.primaryAbort()
    if (this.clientGone) {
      // Nobody to answer; count it as a client-side cut (class 0), not an upstream fault.
      this.choice.stats.record(0, performance.now() - this.t0)
      return
    }
    if (this.res.headersSent) {
      // Mid-body failure: the only honest signal left is to cut the client's response too.
      this.choice.stats.record(this.res.statusCode, performance.now() - this.t0)
      recordResponse(this.upstream, target.rt, this.res.statusCode)
      this.res.destroy(err)
      return
    }
    const fault = classify(err, this.sent)
    if (fault === 'client') return this.refuse()
    // A request body the client broke off is not the target's failure.
    if (this.req.errored === null) recordFault(this.upstream, target.rt, fault)
    if (fault === 'connect') this.ctx.res.markFailed(target.rt, tlsReason(err))
    const retryable =
      fault === 'connect' ||
      fault === 'pool-gone' ||
      (fault === 'reset' && this.idempotent && !(this.hasBody && this.req.readableDidRead))
    if (retryable && this.retriesLeft > 0) {
      this.tried ??= []
      this.tried.push(target)
      const next = pickTarget(this.upstream, this.tried)
      if (next !== undefined) {
        this.retriesLeft--
        this.done = false
        this.upstream.counters.retries++
        this.send(next)
        return
      }
    }
    this.fail(errorCodeFor(fault, err))
  }

  /** Ends the current attempt's bookkeeping exactly once. */
  private settle(): void {
    if (this.done) return
    this.done = true
    this.target!.rt.inflight--
    this.upstream.counters.inflight--
    this.onConnection()
  }

  /** The attempt is on a connection (or over): it no longer counts as pending. */
  private onConnection(): void {
    if (!this.waiting) return
    this.waiting = false
    this.upstream.counters.pending--
  }

  /**
   * Watches a request body for the route's maxBodyBytes and for bodyIdleTimeoutMs: one
   * listener, a byte count and a timer refreshed per chunk. Requests without a body never get here.
   */
  private watchBody(): void {
    const idleMs = this.ctx.limits?.bodyIdleTimeoutMs ?? 0
    if (idleMs <= 0 && this.choice.maxBodyBytes === Infinity) return
    const req = this.req
    // Paused first, so this listener does not start the flow: undici resumes the stream when
    // it writes the body upstream, and both listeners see every chunk (as mirror.ts does).
    req.pause()
    req.on(
      'data',
      (this.onBodyData = (chunk: Buffer) => {
        this.bodyBytes += chunk.length
        if (this.bodyBytes > this.choice.maxBodyBytes) return this.cutBody('PAYLOAD_TOO_LARGE')
        this.idleTimer?.refresh()
      }),
    )
    req.once('end', (this.onBodyEnd = () => this.stopBody()))
    if (idleMs > 0) this.idleTimer = setTimeout(() => this.bodyIdle(), idleMs).unref()
  }

  private stopBody(): void {
    if (this.onBodyData === null) return
    this.req.off('data', this.onBodyData)
    this.req.off('end', this.onBodyEnd!)
    this.onBodyData = null
    if (this.idleTimer !== null) clearTimeout(this.idleTimer)
    this.idleTimer = null
  }

  private bodyIdle(): void {
    const req = this.req
    // Paused (undici is not connected yet, or the upstream pushes back) or holding bytes not
    // read yet: the wait is not the client's. Checked again a period later.
    if (req.readableFlowing !== true || req.readableLength > 0) {
      this.idleTimer!.refresh()
      return
    }
    this.cutBody('REQUEST_TIMEOUT')
  }

  /**
   * Cuts the request body: the upstream request is aborted and the client answered 413 or 408
   * with `Connection: close` (the rest of its body will not be read), or, once a response
   * started, its connection destroyed. Counted in `limited`, never against the upstream.
   */
  private cutBody(code: BodyCut): void {
    this.stopBody()
    // Answered in full (the body's rest is Node's to drop) or already cut: nothing to add.
    if (this.res.writableEnded || this.res.destroyed) return
    this.ctx.res.limited[code === 'PAYLOAD_TOO_LARGE' ? 'body_too_large' : 'body_idle_timeout']++
    this.cut = code
    // Like a client gone: an attempt not on a connection yet is aborted when it gets one.
    this.clientGone = true
    if (this.tap !== null) this.tap.primaryAbort()
    if (!this.done) this.controller?.abort(new Error(code === 'PAYLOAD_TOO_LARGE' ? 'request body over maxBodyBytes' : 'request body idle past bodyIdleTimeoutMs'))
    if (this.res.headersSent) this.res.destroy()
    else sendError(this.res, code, true)
  }

  /**
   * undici refused the request for what the client sent: 400 from the proxy, counted apart
   * (`rejected.unsendable`), never in the route's or upstream's outcomes.
   */
  private refuse(): void {
    this.done = true
    if (this.tap !== null) this.tap.primaryAbort()
    this.ctx.res.rejected.unsendable++
    sendError(this.res, 'BAD_REQUEST', true)
  }

  private fail(code: ProxyErrorCode): void {
    this.done = true
    this.choice.stats.recordError(code, ERRORS[code].status, performance.now() - this.t0)
    sendError(this.res, code, this.ctx.closing)
    if (this.tap !== null) this.tap.primaryEnd(ERRORS[code].status)
  }
}
