/**
 * Publishes this instance's traffic figures once a period (default 1 s): what the data plane
 * counted per (route, upstream) since the last period, read from its monotonic counters. The
 * data plane does nothing for it but count, as it always does.
 *
 * Counters belong to a route/upstream pair and live as long as it does; a pair recompiled
 * keeps its counters (same object), a pair removed and re-created gets new ones. The last
 * reading is kept per counters object, so a new object starts from zero and a removed one
 * simply stops: no negative and no lost counts.
 */
import type { Resources } from '../dataplane/resources.js'
import type { TrafficStats } from '../dataplane/stats.js'
import type { Logger } from '../log.js'
import type { Store } from '../store/store.js'
import { trimmed } from './histogram.js'
import type { SeriesDelta, TelemetrySample } from './types.js'

/** How long samples are kept in the store: the longest window the API answers for. */
export const TELEMETRY_RETAIN_MS = 5 * 60_000

interface Reading {
  /** requests counted (the sum of byClass): unchanged means nothing to read */
  total: number
  byClass: number[]
  latency: Uint32Array
  latencySumMs: number
}

export interface PublisherOptions {
  store: Store
  resources: Resources
  instanceId: string
  log: Logger
  periodMs?: number | undefined
}

export class TelemetryPublisher {
  private readonly last = new WeakMap<TrafficStats, Reading>()
  private timer: NodeJS.Timeout | undefined
  private lastAt = Date.now()
  private busy = false

  constructor(private readonly opts: PublisherOptions) {}

  get periodMs(): number {
    return this.opts.periodMs ?? 1_000
  }

  start(): void {
    this.lastAt = Date.now()
    // The first reading is the baseline: what was counted before this started is not a period's.
    this.collect()
    this.timer = setInterval(() => void this.publish(), this.periodMs)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }

  /** The period's increments since the last call, per pair with traffic. */
  collect(): SeriesDelta[] {
    const series: SeriesDelta[] = []
    // At 10,000 routes there are tens of thousands of pairs, most idle: one sum each tells.
    for (const s of this.opts.resources.traffic.values()) {
      const total = s.requests
      const prev = this.last.get(s)
      // Unchanged, or still nothing counted (a pair first seen later starts from zero anyway).
      if (prev === undefined ? total === 0 : prev.total === total) continue
      const now: Reading = { total, byClass: s.byClass.slice(), latency: s.latency.slice(), latencySumMs: s.latencySumMs }
      this.last.set(s, now)
      const byClass = now.byClass.map((c, i) => c - (prev?.byClass[i] ?? 0))
      if (byClass.every((c) => c === 0)) continue
      const latency = new Uint32Array(now.latency.length)
      for (let i = 0; i < latency.length; i++) latency[i] = now.latency[i]! - (prev?.latency[i] ?? 0)
      // Errors: 5xx answers, the proxy's own 502/503/504 included. A client that left before
      // any status (index 0) is not the upstream's failure.
      series.push({ route: s.route, upstream: s.upstream, byClass, errors: byClass[5]!, latency: trimmed(latency), latencySumMs: now.latencySumMs - (prev?.latencySumMs ?? 0) })
    }
    return series
  }

  private async publish(): Promise<void> {
    if (this.busy) return
    this.busy = true
    const at = Date.now()
    const sample: TelemetrySample = { instance: this.opts.instanceId, at, periodMs: at - this.lastAt, series: this.collect() }
    this.lastAt = at
    try {
      // An idle instance still reports (an empty period), so the fleet knows it saw nothing.
      await this.opts.store.pushTelemetry(sample, TELEMETRY_RETAIN_MS)
    } catch (err) {
      this.opts.log.debug({ err }, 'telemetry push failed; those figures are lost')
    } finally {
      this.busy = false
    }
  }
}
