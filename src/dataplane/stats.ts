/**
 * Counters the data plane keeps as plain numbers; the control plane (metrics, rollout
 * analysis, instance registry) reads them on its own timer. Nothing here allocates per request.
 */
import type { Socket } from 'node:net'

/** Latency histogram bounds in ms: 0.1 ms × 1.25^i, i = 0..63 (up to ~ 163 s), fine enough for p99. */
export const LATENCY_BOUNDS_MS: readonly number[] = Array.from({ length: 64 }, (_, i) => 0.1 * 1.25 ** i)
const LOG_BASE = Math.log(1.25)

export function latencyBucket(ms: number): number {
  if (ms <= 0.1) return 0
  const i = Math.ceil(Math.log(ms / 0.1) / LOG_BASE - 1e-9)
  return i > 63 ? 63 : i
}

export type ProxyErrorCode = 'NO_HEALTHY_TARGET' | 'UPSTREAM_ERROR' | 'UPSTREAM_TIMEOUT'

/** Outcomes of one (route, upstream) pair. Monotonic counters, never reset. */
export class TrafficStats {
  /** responses by status class: index 1..5 = 1xx..5xx; index 0 = proxy errors without a status sent */
  readonly byClass = [0, 0, 0, 0, 0, 0]
  /** errors the proxy made itself, by code; also counted in byClass[5] */
  readonly proxyErrors = { NO_HEALTHY_TARGET: 0, UPSTREAM_ERROR: 0, UPSTREAM_TIMEOUT: 0 }
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

/**
 * Live, mutable facts about one target that must survive table swaps: its in-flight count,
 * its health, its open WebSockets. Keyed by `upstream/id`; the compiled table points at it.
 */
export class TargetRuntime {
  inflight = 0
  /** set by the active health check, and to false at once by a connect failure (passive) */
  healthy: boolean
  /** true while an active health check owns `healthy`; otherwise a passive ejection times out */
  activeCheck = false
  /** whether this target ever passed (or started healthy): a never-ready target enters on its first pass */
  everHealthy: boolean
  ejectTimer: NodeJS.Timeout | undefined = undefined
  readonly websockets = new Set<Socket>()
  /** set while this target's WebSockets wait out `drainTimeoutMs` before being closed */
  wsDrainTimer: NodeJS.Timeout | undefined = undefined

  constructor(
    readonly upstream: string,
    readonly id: string,
    healthy: boolean,
  ) {
    this.healthy = healthy
    this.everHealthy = healthy
  }

  get key(): string {
    return `${this.upstream}/${this.id}`
  }
}

/** Per-upstream counters that are not per route. */
export class UpstreamCounters {
  retries = 0
  /** rotating start for least-request ties */
  cursor = 0
  constructor(readonly upstream: string) {}
}
