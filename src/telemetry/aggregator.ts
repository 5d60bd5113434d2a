/**
 * Fleet sums over a sliding window: every instance's samples in the window, added up per
 * (route, upstream) and per upstream. Read on demand (an analysis every few seconds, an API
 * call); nothing runs in the background. A sample counts when its period ended inside the
 * window, so the newest second (not yet published) is missing: figures lag about one period.
 */
import { SwitchyardError } from '../errors.js'
import type { Store } from '../store/store.js'
import { addInto, percentile } from './histogram.js'
import type { FleetSeries, FleetStats, FleetTelemetry, MismatchSample, SeriesDelta, ShadowFigures, WindowFigures } from './types.js'

interface Sum {
  route: string | null
  upstream: string
  requests: number
  errors: number
  latency: number[]
}

/** Mismatch samples a window shows, newest first. */
const SAMPLES_SHOWN = 10

const emptySum = (route: string | null, upstream: string): Sum => ({ route, upstream, requests: 0, errors: 0, latency: [] })

function add(sum: Sum, s: SeriesDelta): void {
  let n = 0
  for (const c of s.byClass) n += c
  sum.requests += n
  sum.errors += s.errors
  addInto(sum.latency, s.latency)
}

function figures(sum: Sum, windowMs: number): WindowFigures {
  return {
    route: sum.route,
    upstream: sum.upstream,
    requests: sum.requests,
    errors: sum.errors,
    errorRate: sum.requests === 0 ? null : sum.errors / sum.requests,
    rate: sum.requests / (windowMs / 1000),
    p50Ms: percentile(sum.latency, 0.5),
    p99Ms: percentile(sum.latency, 0.99),
  }
}

export class Aggregator implements FleetTelemetry {
  constructor(private readonly store: Store) {}

  private async sums(windowMs: number): Promise<{ at: number; instances: Set<string>; pairs: Map<string, Sum>; upstreams: Map<string, Sum> }> {
    if (!this.store.connected) throw new SwitchyardError('STORE_UNAVAILABLE')
    const at = Date.now()
    const samples = await this.store.telemetry(at - windowMs)
    const instances = new Set<string>()
    const pairs = new Map<string, Sum>()
    const upstreams = new Map<string, Sum>()
    for (const sample of samples) {
      if (sample.at > at) continue
      instances.add(sample.instance)
      for (const s of sample.series) {
        const key = `${s.route}\u0000${s.upstream}`
        let pair = pairs.get(key)
        if (pair === undefined) pairs.set(key, (pair = emptySum(s.route, s.upstream)))
        add(pair, s)
        let up = upstreams.get(s.upstream)
        if (up === undefined) upstreams.set(s.upstream, (up = emptySum(null, s.upstream)))
        add(up, s)
      }
    }
    return { at, instances, pairs, upstreams }
  }

  async window(windowMs: number): Promise<FleetStats> {
    const { at, instances, pairs, upstreams } = await this.sums(windowMs)
    const byName = (a: WindowFigures, b: WindowFigures) => `${a.route}/${a.upstream}`.localeCompare(`${b.route}/${b.upstream}`)
    return {
      windowMs,
      at,
      instances: [...instances].sort(),
      routes: [...pairs.values()].map((s) => figures(s, windowMs)).sort(byName),
      upstreams: [...upstreams.values()].map((s) => figures(s, windowMs)).sort(byName),
    }
  }

  async pairs(route: string, upstreams: readonly string[], windowMs: number): Promise<WindowFigures[]> {
    const { pairs } = await this.sums(windowMs)
    return upstreams.map((upstream) => figures(pairs.get(`${route}\u0000${upstream}`) ?? emptySum(route, upstream), windowMs))
  }

  async shadow(route: string, upstream: string, windowMs: number): Promise<ShadowFigures> {
    if (!this.store.connected) throw new SwitchyardError('STORE_UNAVAILABLE')
    const at = Date.now()
    const sum = emptySum(route, upstream)
    const skipped = { body: 0, busy: 0 }
    const mismatches = { status: 0, body: 0 }
    let compared = 0
    let samples: MismatchSample[] = []
    for (const sample of await this.store.telemetry(at - windowMs)) {
      if (sample.at > at) continue
      for (const s of sample.shadow ?? []) {
        if (s.route !== route || s.upstream !== upstream) continue
        add(sum, s)
        skipped.body += s.skippedBody
        skipped.busy += s.skippedBusy
        compared += s.compared
        mismatches.status += s.mismatches.status
        mismatches.body += s.mismatches.body
        samples = samples.concat(s.samples)
      }
    }
    const differ = mismatches.status + mismatches.body
    return {
      ...figures(sum, windowMs),
      route,
      skipped,
      compared,
      mismatches,
      mismatchRate: compared === 0 ? null : differ / compared,
      samples: samples.sort((a, b) => b.at - a.at).slice(0, SAMPLES_SHOWN),
    }
  }

  async series(windowMs: number, stepMs: number): Promise<FleetSeries> {
    if (!this.store.connected) throw new SwitchyardError('STORE_UNAVAILABLE')
    // Steps end on multiples of stepMs, so points stay put from one call to the next.
    const end = Math.floor(Date.now() / stepMs) * stepMs
    const count = Math.max(1, Math.round(windowMs / stepMs))
    const start = end - count * stepMs
    const times = Array.from({ length: count }, (_, i) => start + (i + 1) * stepMs)
    const sums = new Map<string, Sum[]>()
    for (const sample of await this.store.telemetry(start)) {
      if (sample.at > end) continue
      const i = Math.min(count - 1, Math.floor((sample.at - start - 1) / stepMs))
      for (const s of sample.series) {
        let row = sums.get(s.upstream)
        if (row === undefined) sums.set(s.upstream, (row = times.map(() => emptySum(null, s.upstream))))
        add(row[i]!, s)
      }
    }
    const upstreams: FleetSeries['upstreams'] = {}
    for (const [name, row] of [...sums].sort(([a], [b]) => a.localeCompare(b))) {
      const f = row.map((sum) => figures(sum, stepMs))
      upstreams[name] = { rate: f.map((x) => x.rate), errorRate: f.map((x) => x.errorRate), p99Ms: f.map((x) => x.p99Ms) }
    }
    return { stepMs, times, upstreams }
  }
}
