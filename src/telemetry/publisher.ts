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
import type { MirrorStats, TrafficStats } from '../dataplane/stats.js'
import type { Logger } from '../log.js'
import type { Store } from '../store/store.js'
import { trimmed } from './histogram.js'
import type { SeriesDelta, ShadowDelta, TelemetrySample } from './types.js'

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

/** A mirror's counters at the last reading, besides its answers' (kept in `last`). */
interface ShadowReading {
  skippedBody: number
  skippedBusy: number
  compared: number
  status: number
  body: number
  samplesTotal: number
}

export class TelemetryPublisher {
  private readonly last = new WeakMap<TrafficStats, Reading>()
  private readonly lastShadow = new WeakMap<MirrorStats, ShadowReading>()
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
    this.collectShadow()
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
      const d = this.delta(s)
      if (d !== null) series.push(d)
    }
    return series
  }

  /** One pair's increments since the last reading; null when it counted nothing. */
  private delta(s: TrafficStats): SeriesDelta | null {
    const total = s.requests
    const prev = this.last.get(s)
    // Unchanged, or still nothing counted (a pair first seen later starts from zero anyway).
    if (prev === undefined ? total === 0 : prev.total === total) return null
    const now: Reading = { total, byClass: s.byClass.slice(), latency: s.latency.slice(), latencySumMs: s.latencySumMs }
    this.last.set(s, now)
    const byClass = now.byClass.map((c, i) => c - (prev?.byClass[i] ?? 0))
    if (byClass.every((c) => c === 0)) return null
    const latency = new Uint32Array(now.latency.length)
    for (let i = 0; i < latency.length; i++) latency[i] = now.latency[i]! - (prev?.latency[i] ?? 0)
    // Errors: 5xx answers, the proxy's own 502/503/504 included. A client that left before
    // any status (index 0) is not the upstream's failure.
    return { route: s.route, upstream: s.upstream, byClass, errors: byClass[5]!, latency: trimmed(latency), latencySumMs: now.latencySumMs - (prev?.latencySumMs ?? 0) }
  }

  /** The period's increments of every mirror that counted something. */
  collectShadow(): ShadowDelta[] {
    const out: ShadowDelta[] = []
    for (const m of this.opts.resources.mirrors.values()) {
      const prev = this.lastShadow.get(m)
      const now: ShadowReading = { skippedBody: m.skippedBody, skippedBusy: m.skippedBusy, compared: m.compared, ...m.mismatches, samplesTotal: m.samplesTotal }
      const answers = this.delta(m.answers)
      const d = (k: keyof ShadowReading) => now[k] - (prev?.[k] ?? 0)
      if (answers === null && d('skippedBody') === 0 && d('skippedBusy') === 0 && d('compared') === 0) continue
      this.lastShadow.set(m, now)
      const fresh = Math.min(d('samplesTotal'), m.samples.length)
      out.push({
        ...(answers ?? { route: m.route, upstream: m.upstream, byClass: [0, 0, 0, 0, 0, 0], errors: 0, latency: [], latencySumMs: 0 }),
        skippedBody: d('skippedBody'),
        skippedBusy: d('skippedBusy'),
        compared: d('compared'),
        mismatches: { status: d('status'), body: d('body') },
        samples: fresh > 0 ? m.samples.slice(m.samples.length - fresh) : [],
      })
    }
    return out
  }

  private async publish(): Promise<void> {
    if (this.busy) return
    this.busy = true
    const at = Date.now()
    const sample: TelemetrySample = { instance: this.opts.instanceId, at, periodMs: at - this.lastAt, series: this.collect() }
    const shadow = this.collectShadow()
    if (shadow.length > 0) sample.shadow = shadow
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
