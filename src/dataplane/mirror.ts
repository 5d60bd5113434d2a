/**
 * Traffic mirroring: a bounded, fire-and-forget second dispatch of a request to the route's
 * shadow upstream, whose answer is read, compared with the client's and dropped. It can never
 * delay, fail or alter the client's exchange: the copy is sent only once the client's body was
 * read in full (the body is seen as it streams to the primary, never read ahead of it), through
 * the shadow upstream's own pools, without retries; every fault of the shadow is only counted.
 *
 * Bounds: a copy is skipped (and counted) when its body is above `maxBodyBytes` (known from
 * Content-Length, or found as a chunked body grows) or when `maxConcurrent` copies of the
 * route are in flight in this instance. Only the client's answer that has a copy is captured,
 * up to the same limit, for the comparison, which runs after both answers are complete.
 */
import type { IncomingMessage } from 'node:http'
import type { Dispatcher } from 'undici'
import { ERRORS } from '../errors.js'
import { pickTarget } from './balance.js'
import { compareAnswers, isPlainJson, type Answer } from './compare.js'
import type { Resources } from './resources.js'
import type { ProxyErrorCode } from './stats.js'
import type { CMirror, CTarget, CUpstream, RoutingTable } from './table.js'
import { classify, errorCodeFor, tlsReason } from './upstream-error.js'

/** Marks shadow traffic, so the shadow upstream can avoid side effects (the client's copy of it is stripped). */
export const SHADOW_HEADER = 'x-switchyard-shadow'

/** What the primary exchange tells a copy about the client's answer (forward.ts). */
export interface MirrorTap {
  primaryHeaders(status: number, raw: Buffer[]): void
  primaryData(chunk: Buffer): void
  /** the client got this status in full (an upstream's, or the proxy's own error) */
  primaryEnd(status: number): void
  /** no complete answer to compare with (the client left, the body was cut) */
  primaryAbort(): void
}

/**
 * Decides whether this request is copied (its share, its method, the body and concurrency
 * bounds) and, if so, starts watching its body. Call before the primary exchange starts (its
 * body must be watched before anything reads it), then `requestStarted()` after.
 */
export function mirrorFor(m: CMirror, table: RoutingTable, res: Resources, req: IncomingMessage, path: string, headers: string[], hasBody: boolean): MirrorCopy | null {
  if (Math.random() >= m.share || !m.methods.has(req.method!)) return null
  const s = m.stats
  if (hasBody) {
    const length = req.headers['content-length']
    if (length !== undefined && Number(length) > m.maxBodyBytes) {
      s.skippedBody++
      return null
    }
  }
  if (s.inflight >= m.maxConcurrent) {
    s.skippedBusy++
    return null
  }
  // The upstream is in the same table: the route was compiled against it.
  return new MirrorCopy(m, table.upstreams.get(m.upstream)!, res, req, path, headers, hasBody)
}

/** Captures one side's body when it is JSON and within the limit. */
class Capture {
  status = 0
  private chunks: Buffer[] | null = null
  private size = 0

  constructor(private readonly limit: number) {}

  headers(status: number, raw: readonly Buffer[]): void {
    this.status = status
    this.chunks = isPlainJson(raw) ? [] : null
  }

  data(chunk: Buffer): void {
    if (this.chunks === null) return
    this.size += chunk.length
    if (this.size > this.limit) this.chunks = null
    else this.chunks.push(chunk)
  }

  answer(status: number): Answer {
    // A status the proxy made itself has no upstream body to compare.
    const json = this.chunks !== null && status === this.status ? Buffer.concat(this.chunks) : null
    return { status, json }
  }
}

const PENDING = 0
const DONE = 1
const GONE = 2

export class MirrorCopy implements MirrorTap, Dispatcher.DispatchHandler {
  private body: Buffer[] | null
  private bodySize = 0
  private readonly primary: Capture
  private readonly shadow: Capture
  private primaryState = PENDING
  private primaryStatus = 0
  private shadowState = PENDING
  private shadowStatus = 0
  /** holds a slot of maxConcurrent until the copy ends */
  private holding = true
  private sent = false
  private t0 = 0

  constructor(
    private readonly m: CMirror,
    private readonly upstream: CUpstream,
    private readonly res: Resources,
    private readonly req: IncomingMessage,
    private readonly path: string,
    private readonly headers: string[],
    hasBody: boolean,
  ) {
    m.stats.inflight++
    this.primary = new Capture(m.maxBodyBytes)
    this.shadow = new Capture(m.maxBodyBytes)
    this.body = hasBody ? [] : null
    if (hasBody) {
      // Paused first, so this listener does not start the flow: the primary's dispatch resumes
      // the stream when it writes the body upstream, and both listeners see every chunk.
      req.pause()
      req.on('data', this.onBodyChunk)
      req.once('end', this.onBodyEnd)
      req.once('close', this.onRequestClose)
    }
  }

  /** Sends the copy now when the request has no body (else when the body has been read). */
  requestStarted(): void {
    if (this.body === null) this.send(null)
  }

  private readonly onBodyChunk = (chunk: Buffer): void => {
    this.bodySize += chunk.length
    if (this.bodySize > this.m.maxBodyBytes) {
      this.m.stats.skippedBody++
      this.stopWatching()
      this.release()
      return
    }
    this.body?.push(chunk)
  }

  private readonly onBodyEnd = (): void => {
    if (this.body === null) return
    const body = Buffer.concat(this.body)
    this.stopWatching()
    this.send(body)
  }

  /** The request ended without its body read in full (the client left): no copy. */
  private readonly onRequestClose = (): void => {
    if (this.sent || this.body === null) return
    this.stopWatching()
    this.release()
  }

  private stopWatching(): void {
    this.body = null
    this.req.off('data', this.onBodyChunk)
    this.req.off('end', this.onBodyEnd)
    this.req.off('close', this.onRequestClose)
  }

  private release(): void {
    if (!this.holding) return
    this.holding = false
    this.m.stats.inflight--
    this.shadowState = GONE
  }

  private send(body: Buffer | null): void {
    if (!this.holding) return
    this.sent = true
    this.t0 = performance.now()
    const target = pickTarget(this.upstream, null)
    if (target === undefined) return this.shadowFailed('NO_HEALTHY_TARGET')
    this.target = target
    target.rt.inflight++
    const u = this.upstream
    target.pool!.dispatch(
      {
        path: this.path,
        method: this.req.method as Dispatcher.HttpMethod,
        headers: [...this.headers, SHADOW_HEADER, '1'],
        body,
        headersTimeout: u.headersTimeoutMs,
        bodyTimeout: u.bodyTimeoutMs,
      },
      this,
    )
  }

  private target: CTarget | null = null
  private connected = false

  // The shadow's answer (undici's handler interface, v2).

  onRequestStart(): void {
    this.connected = true
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number): void {
    if (statusCode < 200) return
    // The raw list (an HTTP/1.1 pool gives Buffers), as the primary's capture sees it.
    this.shadow.headers(statusCode, controller.rawHeaders as Buffer[])
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.shadow.data(chunk)
  }

  onResponseEnd(): void {
    this.endTarget()
    this.m.stats.answers.record(this.shadow.status, performance.now() - this.t0)
    this.shadowDone(this.shadow.status)
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    const target = this.endTarget()
    const fault = classify(err, this.connected)
    // The shadow's targets are real targets: one that refuses connections is out for everyone.
    if (fault === 'connect' && target !== null) this.res.markFailed(target.rt, tlsReason(err))
    this.shadowFailed(fault === 'client' ? 'UPSTREAM_ERROR' : errorCodeFor(fault, err))
  }

  private endTarget(): CTarget | null {
    const target = this.target
    if (target !== null) target.rt.inflight--
    this.target = null
    return target
  }

  /** No answer from the shadow: an error of the shadow side, with nothing to compare. */
  private shadowFailed(code: ProxyErrorCode): void {
    this.m.stats.answers.recordError(code, ERRORS[code].status, performance.now() - this.t0)
    this.release()
  }

  private shadowDone(status: number): void {
    if (this.shadowState !== PENDING) return
    this.holding = false
    this.m.stats.inflight--
    this.shadowState = DONE
    this.shadowStatus = status
    this.maybeCompare()
  }

  // The client's answer (from the primary exchange).

  primaryHeaders(status: number, raw: Buffer[]): void {
    this.primary.headers(status, raw)
  }

  primaryData(chunk: Buffer): void {
    this.primary.data(chunk)
  }

  primaryEnd(status: number): void {
    if (this.primaryState !== PENDING) return
    this.primaryState = DONE
    this.primaryStatus = status
    // The primary failed before its body was read: the copy would go out with a partial body.
    if (!this.sent && this.body !== null) {
      this.stopWatching()
      this.release()
      return
    }
    this.maybeCompare()
  }

  primaryAbort(): void {
    if (this.primaryState === PENDING) this.primaryState = GONE
  }

  private maybeCompare(): void {
    if (this.primaryState !== DONE || this.shadowState !== DONE) return
    // Off the path of whichever answer finished last.
    setImmediate(this.compare)
  }

  private readonly compare = (): void => {
    const s = this.m.stats
    const verdict = compareAnswers(this.primary.answer(this.primaryStatus), this.shadow.answer(this.shadowStatus), this.m.ignore)
    s.compared++
    if (verdict.kind === 'same') return
    s.mismatches[verdict.kind]++
    const q = this.path.indexOf('?')
    s.addSample({
      at: Date.now(),
      method: this.req.method ?? '',
      path: q < 0 ? this.path : this.path.slice(0, q),
      kind: verdict.kind,
      status: this.primaryStatus,
      shadowStatus: this.shadowStatus,
      ...(verdict.kind === 'body' ? { jsonPath: verdict.jsonPath } : {}),
    })
  }
}
