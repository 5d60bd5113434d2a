/**
 * Fleet-wide traffic figures. Every instance (every worker) publishes, once a second, what its
 * data plane counted in that second per (route, upstream); an aggregator sums the live
 * instances over a sliding window. The rollout analysis and `GET /api/stats` read the sums.
 */
import type { MismatchSample } from '../dataplane/stats.js'

/** What one (route, upstream) pair counted in one period: increments, not totals. */
export interface SeriesDelta {
  route: string
  upstream: string
  /** responses by status class: index 1..5 = 1xx..5xx; index 0 = proxy errors without a status sent */
  byClass: number[]
  /** 5xx answers and proxy errors (the error rate's numerator) */
  errors: number
  /** requests per latency bucket (`LATENCY_BOUNDS_MS` of the data plane); trailing zeros may be cut */
  latency: number[]
  latencySumMs: number
}

/** What one route's mirror (route → shadow upstream) counted in one period: increments. */
export interface ShadowDelta extends SeriesDelta {
  skippedBody: number
  skippedBusy: number
  compared: number
  mismatches: { status: number; body: number }
  /** mismatch samples taken in the period (a few at most; never bodies or header values) */
  samples: MismatchSample[]
}

/** One instance's report for one second. */
export interface TelemetrySample {
  instance: string
  /** epoch ms at the end of the period it covers */
  at: number
  periodMs: number
  series: SeriesDelta[]
  /** mirrors with something counted in the period; left out when none */
  shadow?: ShadowDelta[]
}

/**
 * A route's shadow side over a window, fleet-wide: the shadow's answers (error rate, p99),
 * copies skipped, and how the compared answers differed from the clients'.
 */
export interface ShadowFigures extends WindowFigures {
  route: string
  skipped: { body: number; busy: number }
  compared: number
  mismatches: { status: number; body: number }
  /** (status + body mismatches) / compared; null when nothing was compared */
  mismatchRate: number | null
  /** the newest mismatch samples in the window, newest first (at most 10) */
  samples: MismatchSample[]
}

export type { MismatchSample }

/** Sums over a window for one (route, upstream) pair, or for an upstream over all routes. */
export interface WindowFigures {
  route: string | null
  upstream: string
  requests: number
  errors: number
  /** null without requests */
  errorRate: number | null
  /** requests per second over the window */
  rate: number
  p50Ms: number | null
  p99Ms: number | null
}

export interface FleetStats {
  windowMs: number
  /** epoch ms: the window is (at - windowMs, at] */
  at: number
  /** instances that reported within the window */
  instances: string[]
  routes: WindowFigures[]
  upstreams: WindowFigures[]
}

/** Per-upstream time series over a window, one point per step (null: no request in that step). */
export interface FleetSeries {
  stepMs: number
  /** epoch ms at the end of each step, oldest first */
  times: number[]
  upstreams: Record<string, { rate: number[]; errorRate: (number | null)[]; p99Ms: (number | null)[] }>
}

/** What the rollout analysis and the admin API ask of the aggregator. */
export interface FleetTelemetry {
  /** The shadow side of `route`'s mirror to `upstream` over the last `windowMs` (zeros when none). */
  shadow(route: string, upstream: string, windowMs: number): Promise<ShadowFigures>
  /** Fleet sums over the last `windowMs`. Throws STORE_UNAVAILABLE when the store cannot answer. */
  window(windowMs: number): Promise<FleetStats>
  /** The figures of `route` to each of `upstreams` over the last `windowMs` (zeros when none), from one read. */
  pairs(route: string, upstreams: readonly string[], windowMs: number): Promise<WindowFigures[]>
  /** Per-upstream rate, error rate and p99 over the last `windowMs`, in steps of `stepMs` (the dashboard's charts). */
  series(windowMs: number, stepMs: number): Promise<FleetSeries>
}
