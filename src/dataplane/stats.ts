/**
 * Counters the data plane keeps as plain numbers; the control plane (metrics, rollout
 * analysis, instance registry) reads them on its own timer. Nothing here allocates per request.
 */
import type { Socket } from 'node:net'
import { publishHealth } from './events.js'

/**
 * Steps of each decade of the latency bounds: about ×1.25 apart (at most ×1.33), so a
 * percentile read inside a bucket is off by at most a third of its value, and every round
 * bound a dashboard asks about (1, 2.5, 5 ... 250 ms, 1, 2.5, 5, 10, 30, 60 s) is one of them:
 * the Prometheus histogram sums whole buckets, none straddles its `le`.
 */
const DECADE_STEPS = ['1', '1.25', '1.6', '2', '2.5', '3', '4', '5', '6', '8'] as const

/**
 * Latency histogram bounds in ms, 0.1 ms to 160 s: bucket 0 holds times up to 0.1 ms, bucket i
 * those in (bound[i-1], bound[i]], bucket 63 everything above bound[62] (160 s). Written as
 * decimal literals (`2.5e1`), so 25 ms is exactly 25, not 0.1 × 250 rounded.
 */
export const LATENCY_BOUNDS_MS: readonly number[] = Array.from({ length: 64 }, (_, i) => Number(`${DECADE_STEPS[i % 10]}e${Math.floor(i / 10) - 1}`))
const BOUNDS = Float64Array.from(LATENCY_BOUNDS_MS)

/** The bucket of a duration: a binary search over 64 bounds (6 comparisons, no allocation). */
export function latencyBucket(ms: number): number {
  let lo = 0
  let hi = 63
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (ms <= BOUNDS[mid]!) hi = mid
    else lo = mid + 1
  }
  return lo
}

export type ProxyErrorCode = 'NO_HEALTHY_TARGET' | 'UPSTREAM_ERROR' | 'UPSTREAM_TIMEOUT' | 'UPSTREAM_TLS_ERROR' | 'UPSTREAM_OVERLOADED'

/**
 * Why the proxy cut a client off for a `listen.limits` or `maxBodyBytes` bound; the label of
 * `switchyard_client_limits_total`. Never counted against a route or upstream (a client cannot
 * move an upstream's error rate or latency with them).
 * - `headers_timeout`: the request head did not arrive within headersTimeoutMs (408)
 * - `body_idle_timeout`: no request body byte for bodyIdleTimeoutMs (408)
 * - `body_too_large`: a request body over the route's maxBodyBytes (413)
 * - `max_connections`: a connection over maxConnections, closed at once
 */
export type LimitReason = 'headers_timeout' | 'body_idle_timeout' | 'body_too_large' | 'max_connections'

export const LIMIT_REASONS: readonly LimitReason[] = ['headers_timeout', 'body_idle_timeout', 'body_too_large', 'max_connections']

/** Plain counters per reason, incremented by the data plane and read by /metrics. */
export function limitCounters(): Record<LimitReason, number> {
  return { headers_timeout: 0, body_idle_timeout: 0, body_too_large: 0, max_connections: 0 }
}

/** Outcomes of one (route, upstream) pair. Monotonic counters, never reset. */
export class TrafficStats {
  /** responses by status class: index 1..5 = 1xx..5xx; index 0 = proxy errors without a status sent */
  readonly byClass = [0, 0, 0, 0, 0, 0]
  /** errors the proxy made itself, by code; also counted in byClass[5] */
  readonly proxyErrors = { NO_HEALTHY_TARGET: 0, UPSTREAM_ERROR: 0, UPSTREAM_TIMEOUT: 0, UPSTREAM_TLS_ERROR: 0, UPSTREAM_OVERLOADED: 0 }
  /** request count per latency bucket (time to the end of the response) */
  readonly latency = new Uint32Array(64)
  latencySumMs = 0

  constructor(
    readonly route: string,
    readonly upstream: string,
  ) {}

  /** A proxy-made error: counted by code, and as a response of its status. */
  recordError(code: ProxyErrorCode, status: number, ms: number): void {
    this.proxyErrors[code]++
    this.record(status, ms)
  }

  record(status: number, ms: number): void {
    const cls = (status / 100) | 0
    this.byClass[cls >= 1 && cls <= 5 ? cls : 0]!++
    this.latency[latencyBucket(ms)]!++
    this.latencySumMs += ms
  }

  get requests(): number {
    const c = this.byClass
    return c[0]! + c[1]! + c[2]! + c[3]! + c[4]! + c[5]!
  }
}

/** Why outlier detection ejected a target (the `reason` label of `switchyard_ejections_total`). */
export type EjectionReason = 'consecutive_5xx' | 'consecutive_gateway_failure'

/** A target's health as the admin API shows it; times are epoch ms. */
export interface TargetHealth {
  healthy: boolean
  /** why it gets no requests, when it does not */
  reason?: string
  /** when it comes back by itself, when it will (an ejection, a passive failure without health check) */
  until?: number
}

/**
 * Live, mutable facts about one target that must survive table swaps: its in-flight count,
 * its health, outlier-detection and slow-start state, its open WebSockets. Keyed by
 * `upstream/id`; the compiled table points at it.
 */
export class TargetRuntime {
  inflight = 0
  /**
   * `healthy` and not ejected: the one flag the balancer reads. Kept in step by the `healthy`
   * setter and by outlier detection, so a pick reads one field.
   */
  available: boolean
  private healthyNow: boolean
  /** true while an active health check owns `healthy`; otherwise a passive ejection times out */
  activeCheck = false
  /** whether this target ever passed (or started healthy): a never-ready target enters on its first pass */
  everHealthy: boolean
  ejectTimer: NodeJS.Timeout | undefined = undefined
  /** why `healthy` last went false */
  downReason = 'health check failing'
  /** epoch ms when a passive failure without active health check ends (0: none pending) */
  passiveUntil = 0

  // Outlier detection (outlier.ts). The counters are the only per-response cost.
  consecutive5xx = 0
  consecutiveGateway = 0
  ejected = false
  /** epoch ms when the current ejection began and when it ends */
  ejectedSince = 0
  ejectedUntil = 0
  /** e.g. "5 consecutive 5xx" */
  ejectDetail = ''
  /** ejections in a row: the ejection time multiplier; decays while the target stays in */
  ejectionLevel = 0
  /** epoch ms of the last return from an ejection */
  returnedAt = 0
  ejectionTimer: NodeJS.Timeout | undefined = undefined
  /** ejections so far, by reason (a monotonic counter for metrics) */
  readonly ejections: Record<EjectionReason, number> = { consecutive_5xx: 0, consecutive_gateway_failure: 0 }

  /** performance.now() when the current slow-start ramp began; -1 when not ramping */
  rampStart = -1
  /** whether the target was `active` in the last compiled table (a return to active ramps up) */
  wasActive = false

  readonly websockets = new Set<Socket>()
  /** set while this target's WebSockets wait out `drainTimeoutMs` before being closed */
  wsDrainTimer: NodeJS.Timeout | undefined = undefined

  constructor(
    readonly upstream: string,
    readonly id: string,
    healthy: boolean,
    /** the upstream's counters: its slow-start flag, and the scope of published events */
    readonly counters: UpstreamCounters,
  ) {
    this.healthyNow = healthy
    this.available = healthy
    this.everHealthy = healthy
  }

  get key(): string {
    return `${this.upstream}/${this.id}`
  }

  /** Set by the active health check, by a passive failure and its timeout. */
  get healthy(): boolean {
    return this.healthyNow
  }

  set healthy(v: boolean) {
    if (v === this.healthyNow) return
    this.healthyNow = v
    this.available = v && !this.ejected
    if (v) {
      this.passiveUntil = 0
      this.startRamp()
    } else this.downReason = 'health check failing'
    // A flip is rare (a check's threshold, a connect failure): told on a channel, never logged here.
    // Published after the caller set its reason: a microtask later.
    queueMicrotask(() =>
      publishHealth({ scope: this.counters.scope, upstream: this.upstream, target: this.id, healthy: this.healthyNow, ...(this.healthyNow ? {} : { reason: this.downReason }) }),
    )
  }

  /** A target that joins or comes back starts its slow-start ramp now (a time read, on a rare event). */
  startRamp(): void {
    const now = performance.now()
    this.rampStart = now
    this.counters.lastRampStart = now
  }

  /** What the admin API shows: healthy or not, why not, and until when. */
  health(): TargetHealth {
    if (this.ejected) return { healthy: false, reason: `ejected: ${this.ejectDetail}`, until: this.ejectedUntil }
    if (this.healthyNow) return { healthy: true }
    if (!this.everHealthy) return { healthy: false, reason: 'waiting for its first passing health check' }
    return this.passiveUntil > 0 ? { healthy: false, reason: this.downReason, until: this.passiveUntil } : { healthy: false, reason: this.downReason }
  }
}

/** Per-upstream counters and state that are not per route. */
export class UpstreamCounters {
  retries = 0
  /**
   * Requests of this instance sent to the upstream (any target) and not finished: the
   * circuit breaker's maxConcurrent. An attempt counts from its dispatch to its end.
   */
  inflight = 0
  /**
   * Of those, the ones not on a connection yet (dispatched, waiting for the pool to connect a
   * socket or free one): the circuit breaker's maxPending.
   */
  pending = 0
  /** requests answered 503 UPSTREAM_OVERLOADED, by the bound that was reached */
  readonly overloaded = { max_concurrent: 0, max_pending: 0 }
  /** rotating start for least-request ties */
  cursor = 0
  /**
   * performance.now() when the upstream's latest slow-start ramp began, -1 when none is under way:
   * the balancer reads the clock only while this is set and less than `slowStartMs` ago.
   */
  lastRampStart = -1
  constructor(
    readonly upstream: string,
    /** the Resources this belongs to: tells one instance's events from another's in one process */
    readonly scope: object,
  ) {}
}

/** A mirrored request whose answers differed: what and where, never bodies or header values. */
export interface MismatchSample {
  /** epoch ms */
  at: number
  method: string
  /** the request path without its query (a query may carry credentials) */
  path: string
  kind: 'status' | 'body'
  /** status codes of the client's answer and of the shadow's */
  status: number
  shadowStatus: number
  /** the first differing JSON path, for `body` */
  jsonPath?: string
}

/** Mismatch samples a route keeps (newest last): enough to point at a path, bounded. */
export const MIRROR_SAMPLES_KEPT = 10

/**
 * Outcomes of one route's mirror (route → shadow upstream), apart from the route's own traffic:
 * the shadow's answers never count as the upstream's answers to clients.
 */
export class MirrorStats {
  /** the shadow's answers by status class and latency; its transport failures as 502/503/504 */
  readonly answers: TrafficStats
  /** copies not sent: body above maxBodyBytes, maxConcurrent reached */
  skippedBody = 0
  skippedBusy = 0
  /** copies taken and not finished, in this instance (the maxConcurrent bound) */
  inflight = 0
  /** pairs of answers compared, and those that differed, by kind */
  compared = 0
  readonly mismatches = { status: 0, body: 0 }
  readonly samples: MismatchSample[] = []
  /** samples taken so far (monotonic): how a reader finds the ones it has not seen */
  samplesTotal = 0

  constructor(
    readonly route: string,
    readonly upstream: string,
  ) {
    this.answers = new TrafficStats(route, upstream)
  }

  addSample(s: MismatchSample): void {
    if (this.samples.length >= MIRROR_SAMPLES_KEPT) this.samples.shift()
    this.samples.push(s)
    this.samplesTotal++
  }
}
