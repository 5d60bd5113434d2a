/**
 * Every Prometheus metric switchyard exposes, in one place. Nothing here runs on the
 * request path: the data plane only increments plain numbers (dataplane/stats.ts), and each
 * metric reads them in its `collect()` when `/metrics` is scraped (the request path pays nothing).
 *
 * - Counters and gauges are prom-client metrics whose `collect()` replaces their series with
 *   the live values. Everything is read as families (exposition.ts) and written by our own
 *   writer: prom-client's writes NaN as `Nan`, which fails a whole Prometheus scrape, and
 *   families are what the primary sums over `--workers`.
 * - `request_duration_seconds` is built here: prom-client's Histogram only takes
 *   observations, while ours are already bucketed. Its `le` bounds are round (1 ms ... 60 s)
 *   and each is one of the data plane's own bounds, so the cumulative counts are exact sums of
 *   whole buckets, not interpolations.
 * - Node's default metrics (`process_*`, `nodejs_*`, under their standard names) live on one
 *   Registry per process (they describe the process, and prom-client cannot stop their
 *   observers), so many instances in one process neither clash ("already registered") nor leak
 *   observers; counters and gauges live on one Registry per instance.
 */
import { createRequire } from 'node:module'
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import type { State, TargetState } from '../config/schema.js'
import type { Resources } from '../dataplane/resources.js'
import { REJECT_REASONS } from '../dataplane/request-checks.js'
import { LATENCY_BOUNDS_MS, LIMIT_REASONS, type TargetRuntime, type TrafficStats } from '../dataplane/stats.js'
import { fromPromJson, renderFamilies, type Family, type Sample } from './exposition.js'

/**
 * What the rollout gauge reads of a rollout record (rollout/schema.ts); the state holds the
 * records opaque, and metrics do not load the rollout code to read four fields.
 */
interface RolloutWeights {
  id: string
  from: string
  to: string
  weight: number
}

/** What the metrics read at scrape time: the live counters and the applied state. */
export interface MetricsDeps {
  dataplane: { readonly resources: Resources }
  control: {
    readonly state: State
    readonly store: { readonly connected: boolean }
    /** `effective`: the applied state plus discovered targets, what target gauges iterate */
    readonly follower: { behindMs(): number; readonly applyFailures: number; readonly behindAlerts: number; readonly divergences: number; readonly effective: State }
  }
  /** Rollout webhook deliveries, when rollouts run. */
  notifier?: { readonly sent: number; readonly failed: number; readonly dropped: number }
  /** DNS discovery's lookup counters per upstream, when it runs. */
  discovery?: { stats(): readonly { upstream: string; lookups: number; failures: number }[] } | undefined
}

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
const PREFIX = 'switchyard_'

/** `code_class` per index of `TrafficStats.byClass`; index 0 (the client went away before a status) is `none`. */
const CODE_CLASSES = ['none', '1xx', '2xx', '3xx', '4xx', '5xx'] as const
const TARGET_STATES: readonly TargetState[] = ['active', 'draining', 'disabled']

/** The histogram's `le` bounds in ms: round, so "the share under 250 ms" is one bucket's query. */
export const DURATION_LE_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000] as const
/** Index of each `le` among the fine bounds: found exactly, or the module refuses to load. */
const LE_INDICES = DURATION_LE_MS.map((ms) => {
  const i = LATENCY_BOUNDS_MS.indexOf(ms)
  if (i < 0) throw new Error(`metrics: ${ms} ms is not a bound of the latency histogram`)
  return i
})
const LE_LABELS = DURATION_LE_MS.map((ms) => String(ms / 1000))

const VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version

/**
 * Default metrics are read at most once per this period. The event-loop figures come from a
 * histogram that each read resets: two reads a few ms apart (two instances in one process, two
 * scrapers) would leave the second with no sample at all, so they share one reading.
 */
const PROCESS_READ_MS = 1_000
const LAG_STATS = ['min', 'max', 'mean', 'stddev', 'p50', 'p90', 'p99'].map((s) => `nodejs_eventloop_lag_${s}_seconds`)

let processRegistry: Registry | undefined
/** The process's registry of default metrics; its observers (event loop, GC) start with it. */
function processMetrics(): Registry {
  if (processRegistry === undefined) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}
let processRead: { at: number; families: Promise<Family[]> } | undefined

/** Node's default metrics (`process_cpu_user_seconds_total`, `nodejs_heap_size_used_bytes`, event-loop lag, GC...). */
function processFamilies(): Promise<Family[]> {
  const registry = processMetrics()
  const now = performance.now()
  if (processRead === undefined || now - processRead.at >= PROCESS_READ_MS) {
    processRead = { at: now, families: registry.getMetricsAsJSON().then((json) => withoutEmptyLag(fromPromJson(json))) }
  }
  return processRead.families
}

/**
 * With no event-loop sample since the last read, Node's histogram answers min 9.2e9 s, max
 * and percentiles 0 and mean NaN: only NaN is true, so every lag statistic says NaN ("no data").
 */
function withoutEmptyLag(families: Family[]): Family[] {
  const mean = families.find((f) => f.name === 'nodejs_eventloop_lag_mean_seconds')?.samples[0]?.value
  if (mean === undefined || !Number.isNaN(mean)) return families
  return families.map((f) => (LAG_STATS.includes(f.name) ? { ...f, samples: f.samples.map((s) => ({ ...s, value: NaN })) } : f))
}

/** One instance's metrics; `render()` reads everything at the time of the call. */
export class Metrics {
  private readonly registry = new Registry()

  constructor(private readonly deps: MetricsDeps) {
    const registers = [this.registry]
    const { resources } = deps.dataplane
    const control = deps.control

    new Counter({
      name: `${PREFIX}requests_total`,
      help: 'Responses per route and upstream by status class (none: the client went away before a status).',
      labelNames: ['route', 'upstream', 'code_class'],
      registers,
      collect() {
        this.reset()
        for (const s of resources.traffic.values()) {
          CODE_CLASSES.forEach((code_class, i) => this.inc({ route: s.route, upstream: s.upstream, code_class }, s.byClass[i]!))
        }
      },
    })
    new Counter({
      name: `${PREFIX}proxy_errors_total`,
      help: 'Errors the proxy answered itself, by code (also counted in requests_total as 5xx).',
      labelNames: ['route', 'upstream', 'code'],
      registers,
      collect() {
        this.reset()
        for (const s of resources.traffic.values()) {
          for (const [code, n] of Object.entries(s.proxyErrors)) this.inc({ route: s.route, upstream: s.upstream, code }, n)
        }
      },
    })
    // Mirroring (route → shadow upstream): the shadow's answers never count in requests_total.
    new Counter({
      name: `${PREFIX}mirror_requests_total`,
      help: "Copies of mirrored requests answered by the shadow upstream, by status class (5xx includes the copy's own 502/503/504 when the shadow gave no answer).",
      labelNames: ['route', 'upstream', 'code_class'],
      registers,
      collect() {
        this.reset()
        for (const m of resources.mirrors.values()) {
          CODE_CLASSES.forEach((code_class, i) => this.inc({ route: m.route, upstream: m.upstream, code_class }, m.answers.byClass[i]!))
        }
      },
    })
    new Counter({
      name: `${PREFIX}mirror_skipped_total`,
      help: 'Requests chosen for mirroring but not copied, by reason: body (above maxBodyBytes), busy (maxConcurrent copies in flight).',
      labelNames: ['route', 'upstream', 'reason'],
      registers,
      collect() {
        this.reset()
        for (const m of resources.mirrors.values()) {
          this.inc({ route: m.route, upstream: m.upstream, reason: 'body' }, m.skippedBody)
          this.inc({ route: m.route, upstream: m.upstream, reason: 'busy' }, m.skippedBusy)
        }
      },
    })
    new Counter({
      name: `${PREFIX}mirror_compared_total`,
      help: "Mirrored requests whose shadow answer was compared with the client's.",
      labelNames: ['route', 'upstream'],
      registers,
      collect() {
        this.reset()
        for (const m of resources.mirrors.values()) this.inc({ route: m.route, upstream: m.upstream }, m.compared)
      },
    })
    new Counter({
      name: `${PREFIX}mirror_mismatches_total`,
      help: "Compared answers that differed, by kind: status (status class), body (JSON document, ignored fields aside).",
      labelNames: ['route', 'upstream', 'kind'],
      registers,
      collect() {
        this.reset()
        for (const m of resources.mirrors.values()) {
          for (const [kind, n] of Object.entries(m.mismatches)) this.inc({ route: m.route, upstream: m.upstream, kind }, n)
        }
      },
    })
    /** A counter without labels whose value is read from one plain number at scrape time. */
    const plainCounter = (name: string, help: string, read: () => number) =>
      new Counter({
        name: `${PREFIX}${name}`,
        help,
        registers,
        collect() {
          this.reset()
          this.inc(read())
        },
      })
    plainCounter('no_route_total', 'Requests that matched no route (404 NO_ROUTE).', () => resources.noRoute)
    new Counter({
      name: `${PREFIX}bad_requests_total`,
      help: 'Requests the proxy refused itself for what the client sent (400, 405 for CONNECT), by reason; never sent upstream nor counted in requests_total.',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset()
        for (const reason of REJECT_REASONS) this.inc({ reason }, resources.rejected[reason])
      },
    })
    new Counter({
      name: `${PREFIX}client_limits_total`,
      help: 'Clients cut off by an edge bound, by reason: headers_timeout and body_idle_timeout (408), body_too_large (413), max_connections (connection closed at once); never counted in requests_total.',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset()
        for (const reason of LIMIT_REASONS) this.inc({ reason }, resources.limited[reason])
      },
    })
    new Counter({
      name: `${PREFIX}upstream_overloaded_total`,
      help: "Requests answered 503 UPSTREAM_OVERLOADED by an upstream's circuit breaker, by the bound reached (max_concurrent, max_pending); also in requests_total as 5xx.",
      labelNames: ['upstream', 'bound'],
      registers,
      collect() {
        this.reset()
        for (const c of resources.upstreams.values()) {
          this.inc({ upstream: c.upstream, bound: 'max_concurrent' }, c.overloaded.max_concurrent)
          this.inc({ upstream: c.upstream, bound: 'max_pending' }, c.overloaded.max_pending)
        }
      },
    })
    new Counter({
      name: `${PREFIX}retries_total`,
      help: 'Retries of a request on another target, per upstream.',
      labelNames: ['upstream'],
      registers,
      collect() {
        this.reset()
        for (const c of resources.upstreams.values()) this.inc({ upstream: c.upstream }, c.retries)
      },
    })

    /**
     * Targets in force (the applied state and discovered targets): runtimes of removed targets
     * (still finishing requests) are left out.
     */
    const eachTarget = (fn: (upstream: string, id: string, state: TargetState) => void) => {
      for (const [upstream, u] of Object.entries(control.follower.effective.upstreams)) for (const t of u.targets) fn(upstream, t.id, t.state)
    }
    /** A gauge with one series per target of the applied state, read from its runtime. */
    const targetGauge = (name: string, help: string, value: (rt: TargetRuntime) => number) =>
      new Gauge({
        name: `${PREFIX}${name}`,
        help,
        labelNames: ['upstream', 'target'],
        registers,
        collect() {
          this.reset()
          eachTarget((upstream, target) => {
            const rt = resources.targets.get(`${upstream}/${target}`)
            if (rt) this.set({ upstream, target }, value(rt))
          })
        },
      })
    targetGauge('upstream_inflight', 'Requests in flight to a target, in this instance.', (rt) => rt.inflight)
    targetGauge(
      'target_healthy',
      '1 while the target passes its health checks (active or passive) and is not ejected by outlier detection, else 0.',
      (rt) => (rt.available ? 1 : 0),
    )
    targetGauge('target_ejected', '1 while outlier detection keeps the target out, else 0.', (rt) => (rt.ejected ? 1 : 0))
    new Counter({
      name: `${PREFIX}ejections_total`,
      help: 'Ejections of a target by outlier detection, by reason (consecutive_5xx, consecutive_gateway_failure).',
      labelNames: ['upstream', 'target', 'reason'],
      registers,
      collect() {
        this.reset()
        eachTarget((upstream, target) => {
          const rt = resources.targets.get(`${upstream}/${target}`)
          if (rt) for (const [reason, n] of Object.entries(rt.ejections)) this.inc({ upstream, target, reason }, n)
        })
      },
    })
    new Gauge({
      name: `${PREFIX}target_state`,
      help: "1 for the target's administrative state (active, draining, disabled), 0 for the others.",
      labelNames: ['upstream', 'target', 'state'],
      registers,
      collect() {
        this.reset()
        eachTarget((upstream, target, current) => {
          for (const state of TARGET_STATES) this.set({ upstream, target, state }, state === current ? 1 : 0)
        })
      },
    })
    new Gauge({
      name: `${PREFIX}state_revision`,
      help: 'Revision of the state this instance applied.',
      registers,
      collect() {
        this.set(control.state.revision)
      },
    })
    new Gauge({
      name: `${PREFIX}state_behind_seconds`,
      help: "How long this instance's applied revision has been behind the store's (0 when it is not). Above 5 s it is not following: see its log.",
      registers,
      collect() {
        this.set(control.follower.behindMs() / 1000)
      },
    })
    plainCounter(
      'state_behind_alerts_total',
      'Times this instance stayed behind the store for more than 5 s (each logged as a warning).',
      () => control.follower.behindAlerts,
    )
    plainCounter(
      'state_apply_failures_total',
      'States from the store that this instance could not compile (each revision once; logged as an error).',
      () => control.follower.applyFailures,
    )
    plainCounter(
      'state_divergences_total',
      "Times this instance found the store at a lower revision than it applied (it re-seeded the store) or at its revision with another state (it applied the store's); each logged as a warning.",
      () => control.follower.divergences,
    )
    new Gauge({
      name: `${PREFIX}store_connected`,
      help: '1 while the state store is reachable, else 0.',
      registers,
      collect() {
        this.set(control.store.connected ? 1 : 0)
      },
    })
    const notifier = deps.notifier
    new Counter({
      name: `${PREFIX}rollout_webhooks_total`,
      help: 'Rollout webhook deliveries by result: sent (a 2xx), failed (no 2xx after 4 attempts; each logged), dropped (too many pending).',
      labelNames: ['result'],
      registers,
      collect() {
        this.reset()
        this.inc({ result: 'sent' }, notifier?.sent ?? 0)
        this.inc({ result: 'failed' }, notifier?.failed ?? 0)
        this.inc({ result: 'dropped' }, notifier?.dropped ?? 0)
      },
    })
    const discovery = deps.discovery
    new Counter({
      name: `${PREFIX}dns_lookups_total`,
      help: 'DNS discovery lookups per upstream, by result (error: failed or no address; the last good targets stay).',
      labelNames: ['upstream', 'result'],
      registers,
      collect() {
        this.reset()
        for (const s of discovery?.stats() ?? []) {
          this.inc({ upstream: s.upstream, result: 'ok' }, s.lookups - s.failures)
          this.inc({ upstream: s.upstream, result: 'error' }, s.failures)
        }
      },
    })
    new Gauge({
      name: `${PREFIX}rollout_weight`,
      help: "Weight (percent of the route's traffic) of each side of a rollout, from this instance's applied state; finished rollouts show where they ended.",
      labelNames: ['rollout', 'upstream'],
      registers,
      collect() {
        this.reset()
        for (const r of Object.values(control.state.rollouts as Record<string, RolloutWeights>)) {
          this.set({ rollout: r.id, upstream: r.from }, 100 - r.weight)
          this.set({ rollout: r.id, upstream: r.to }, r.weight)
        }
      },
    })
    processMetrics()
  }

  /**
   * Every family of this instance. The histogram and every `collect()` run in the same
   * synchronous stretch, so one read is one consistent snapshot: per (route, upstream) the
   * histogram's `_count` equals the sum of `requests_total` over `code_class`.
   */
  async families(): Promise<Family[]> {
    const { resources } = this.deps.dataplane
    const histogram = durationHistogram(
      `${PREFIX}request_duration_seconds`,
      'Time from receiving a request to the end of its response, per route and upstream.',
      resources.traffic.values(),
    )
    const mirror = durationHistogram(
      `${PREFIX}mirror_duration_seconds`,
      "Time from sending a mirrored copy to the end of the shadow's answer, per route and shadow upstream.",
      [...resources.mirrors.values()].map((m) => m.answers),
    )
    const [own, proc] = await Promise.all([this.registry.getMetricsAsJSON(), processFamilies()])
    const build: Family = {
      name: `${PREFIX}build_info`,
      help: 'Always 1; the labels tell the switchyard version and the Node.js version it runs on.',
      type: 'gauge',
      samples: [{ name: `${PREFIX}build_info`, labels: { version: VERSION, node: process.versions.node }, value: 1 }],
    }
    return [build, ...fromPromJson(own), histogram, mirror, ...proc]
  }

  /** The Prometheus text exposition of this instance. */
  async render(): Promise<string> {
    return renderFamilies(await this.families())
  }
}

/** A latency histogram per (route, upstream) from already-bucketed counts, on the round `le` bounds. */
function durationHistogram(name: string, help: string, stats: Iterable<TrafficStats>): Family {
  const samples: Sample[] = []
  for (const s of stats) {
    const labels = { route: s.route, upstream: s.upstream }
    let cumulative = 0
    let next = 0
    LE_INDICES.forEach((bound, k) => {
      for (; next <= bound; next++) cumulative += s.latency[next]!
      samples.push({ name: `${name}_bucket`, labels: { ...labels, le: LE_LABELS[k]! }, value: cumulative })
    })
    for (; next < s.latency.length; next++) cumulative += s.latency[next]!
    samples.push({ name: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: cumulative })
    samples.push({ name: `${name}_sum`, labels, value: s.latencySumMs / 1000 })
    samples.push({ name: `${name}_count`, labels, value: cumulative })
  }
  return { name, help, type: 'histogram', samples }
}
