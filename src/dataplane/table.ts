/**
 * The compiled routing table: an immutable, pre-digested form of the state that the hot path
 * reads without allocating. `compileTable()` runs on the control plane; it throws on a state it
 * cannot compile, so the table in force stays live (a rejected change changes nothing),
 * and it touches no live resource before the whole table is built.
 */
import type { Pool } from './pool.js'
import { DEFAULTS } from '../config/defaults.js'
import type { FlagSpec, State, StringMatch, Upstream } from '../config/schema.js'
import { seedOf } from './bucket.js'
import { outlierPolicy, release, type OutlierPolicy } from './outlier.js'
import { poolKey, statsKey, type LiveKeys, type Resources, type Staging } from './resources.js'
import type { TargetRuntime, TrafficStats, UpstreamCounters } from './stats.js'

export interface CTarget {
  readonly id: string
  readonly url: string
  readonly upstream: string
  /**
   * The connection pool, for active targets only: a draining or disabled target gets no new
   * request, and dropping its pool from the table lets `prune()` close its idle keep-alive
   * sockets at once (drain) while requests still in flight finish on it.
   */
  readonly pool: Pool | null
  readonly poolKey: string
  readonly rt: TargetRuntime
  /** state === 'active': only those get new requests */
  readonly active: boolean
  /** `host:port` for raw connections (WebSocket) */
  readonly host: string
  readonly port: number
}

export interface CUpstream {
  readonly name: string
  readonly targets: readonly CTarget[]
  /** active targets only; health is checked per request since it changes between swaps */
  readonly active: readonly CTarget[]
  readonly byId: ReadonlyMap<string, CTarget>
  readonly retries: number
  readonly connectTimeoutMs: number
  readonly headersTimeoutMs: number
  readonly bodyTimeoutMs: number
  readonly drainTimeoutMs: number
  readonly p2c: boolean
  readonly counters: UpstreamCounters
  /** null: outlier detection is off */
  readonly outlier: OutlierPolicy | null
  /** 0: off */
  readonly slowStartMs: number
}

/** A route's way to one upstream, with the counters for that pair. */
export interface Choice {
  readonly upstream: CUpstream
  readonly stats: TrafficStats
}

export type ValueTest = (value: string) => boolean

export interface CRule {
  readonly headers: readonly { name: string; test: ValueTest }[]
  readonly cookies: readonly { name: string; test: ValueTest }[]
  readonly query: readonly { name: string; test: ValueTest }[]
  readonly choice: Choice
}

export const STICKY_HEADER = 0
export const STICKY_COOKIE = 1
export const STICKY_IP = 2

export interface CRoute {
  readonly name: string
  readonly exactHost: string | null
  readonly prefix: string
  readonly methods: ReadonlySet<string> | null
  readonly rules: readonly CRule[]
  readonly split: readonly Choice[]
  readonly weights: readonly number[]
  readonly seeds: readonly number[]
  readonly totalWeight: number
  /** index into split when exactly one upstream has weight > 0 (no hashing needed) */
  readonly single: number
  readonly stickyKind: number
  readonly stickyName: string // lowercase header name, or cookie name
  /** forward the path as the client sent it instead of the normalized one (matching is the same) */
  readonly preservePath: boolean
}

export interface CFlag {
  readonly name: string
  /** 0 = always off, 1 = always on, 2 = by user bucket */
  readonly mode: 0 | 1 | 2
  readonly threshold: number // percent / 100
  readonly seed: number
  readonly byKind: number // STICKY_* constants
  readonly byName: string
}

export interface RoutingTable {
  readonly revision: number
  /** routes for an exact host, already merged with the `*` routes in match order */
  readonly byHost: ReadonlyMap<string, readonly CRoute[]>
  readonly wildcard: readonly CRoute[]
  readonly upstreams: ReadonlyMap<string, CUpstream>
  readonly flags: readonly CFlag[]
  /** the x-switchyard-flags value when no flag depends on the user; null when some do */
  readonly staticFlags: string | null
}

export interface CompileOptions {
  /** Health a target starts with when it is new to this process (config targets healthy, run-time ones after a check). */
  initiallyHealthy?: (upstream: string, targetId: string) => boolean
}

function valueTest(m: StringMatch): ValueTest {
  if (typeof m === 'string') return (v) => v === m
  const re = new RegExp(m.regex)
  return (v) => re.test(v)
}

function entries(rec: Record<string, StringMatch> | undefined, lower: boolean) {
  return Object.entries(rec ?? {}).map(([name, m]) => ({ name: lower ? name.toLowerCase() : name, test: valueTest(m) }))
}

function stickyKindOf(by: 'header' | 'cookie' | 'ip'): number {
  return by === 'header' ? STICKY_HEADER : by === 'cookie' ? STICKY_COOKIE : STICKY_IP
}

function compileFlag(name: string, f: FlagSpec): CFlag {
  const percent = f.percent ?? 100
  const mode = !f.enabled || percent <= 0 ? 0 : percent >= 100 ? 1 : 2
  const by = f.by ?? {}
  const byKind = by.header ? STICKY_HEADER : by.cookie ? STICKY_COOKIE : STICKY_IP
  const byName = by.header ? by.header.toLowerCase() : (by.cookie ?? '')
  return Object.freeze({ name, mode, threshold: percent / 100, seed: seedOf(`flag:${name}`), byKind, byName })
}

/** Match order for one host: longest prefix first; exact host before `*`; then declaration order. */
function ordered(routes: CRoute[]): readonly CRoute[] {
  return Object.freeze(
    routes
      .map((r, i) => ({ r, i }))
      .sort(
        (a, b) =>
          b.r.prefix.length - a.r.prefix.length ||
          Number(b.r.exactHost !== null) - Number(a.r.exactHost !== null) ||
          a.i - b.i,
      )
      .map((x) => x.r),
  )
}

/**
 * Builds the table for `state`. Pools, target runtimes and stats come from `res` so they survive
 * the swap; the caller calls `res.prune()` with `liveKeys()` once the table is in force. Every
 * change to `res` (new runtimes, pools and counters, health and slow-start changes) is staged
 * and applied only after the last thing that can throw.
 */
export function compileTable(state: State, res: Resources, opts: CompileOptions = {}): RoutingTable {
  const healthyAtStart = opts.initiallyHealthy ?? (() => true)
  const stage = res.stage()
  const upstreams = new Map<string, CUpstream>()
  for (const [name, u] of Object.entries(state.upstreams)) {
    upstreams.set(name, compileUpstream(name, u, stage, healthyAtStart))
  }

  const upstreamOf = (route: string, name: string): CUpstream => {
    const u = upstreams.get(name)
    if (!u) throw new Error(`route "${route}" names unknown upstream "${name}"`)
    return u
  }

  const routes = state.routes.map((r): CRoute => {
    const choice = (name: string): Choice => Object.freeze({ upstream: upstreamOf(r.name, name), stats: stage.stats(r.name, name) })
    // Canonical order (by name) so that the same split always compiles the same way.
    const names = Object.keys(r.split).sort()
    const weights = names.map((n) => r.split[n]!)
    const totalWeight = weights.reduce((a, b) => a + b, 0)
    if (totalWeight <= 0) throw new Error(`route "${r.name}": split weights are all 0`)
    const positive = weights.filter((w) => w > 0).length
    const host = r.match?.host ?? '*'
    return Object.freeze({
      name: r.name,
      exactHost: host === '*' ? null : host.toLowerCase(),
      prefix: r.match?.pathPrefix ?? '/',
      methods: r.match?.methods ? new Set(r.match.methods) : null,
      rules: Object.freeze(
        (r.rules ?? []).map((rule) =>
          Object.freeze({
            headers: entries(rule.match.header, true),
            cookies: entries(rule.match.cookie, false),
            query: entries(rule.match.query, false),
            choice: choice(rule.upstream),
          }),
        ),
      ),
      split: Object.freeze(names.map(choice)),
      weights: Object.freeze(weights),
      seeds: Object.freeze(names.map((n) => seedOf(n))),
      totalWeight,
      single: positive === 1 ? weights.findIndex((w) => w > 0) : -1,
      stickyKind: r.sticky ? stickyKindOf(r.sticky.by) : -1,
      stickyName: r.sticky?.by === 'header' ? (r.sticky.name ?? '').toLowerCase() : (r.sticky?.name ?? ''),
      preservePath: r.preservePath === true,
    })
  })

  const wildcard = routes.filter((r) => r.exactHost === null)
  const byHost = new Map<string, readonly CRoute[]>()
  for (const host of new Set(routes.flatMap((r) => (r.exactHost === null ? [] : [r.exactHost])))) {
    byHost.set(host, ordered(routes.filter((r) => r.exactHost === host || r.exactHost === null)))
  }

  const flags = Object.entries(state.flags).map(([name, f]) => compileFlag(name, f))
  const staticFlags = flags.every((f) => f.mode !== 2)
    ? flags.map((f) => `${f.name}=${f.mode === 1 ? 'on' : 'off'}`).join(',')
    : null

  stage.commit()
  return Object.freeze({
    revision: state.revision,
    byHost,
    wildcard: ordered(wildcard),
    upstreams,
    flags: Object.freeze(flags),
    staticFlags,
  })
}

/**
 * One upstream's part of the table. Changes to live runtimes go through `stage.later()`: they
 * run only once the whole table compiled.
 */
function compileUpstream(
  name: string,
  u: Upstream,
  stage: Staging,
  healthyAtStart: (upstream: string, id: string) => boolean,
): CUpstream {
  const connectTimeoutMs = u.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs
  const hasCheck = u.healthCheck !== undefined
  const outlier = outlierPolicy(u.outlierDetection)
  const targets = u.targets.map((t): CTarget => {
    const url = new URL(t.url)
    const active = t.state === 'active'
    const { rt, isNew } = stage.target(name, t.id, healthyAtStart(name, t.id))
    stage.later(() => {
      // The health check was removed: nothing would ever bring a target it took out back.
      if (rt.activeCheck && !hasCheck) rt.healthy = true
      rt.activeCheck = hasCheck
      if (outlier === null) release(rt)
      // Joining a running upstream (new, or back to active) starts the slow-start ramp; targets
      // of the first table all start together, and an unhealthy one ramps when it passes.
      if (active && !rt.wasActive && rt.healthy && !(isNew && stage.firstTable)) rt.startRamp()
      rt.wasActive = active
    })
    return Object.freeze({
      id: t.id,
      url: t.url,
      upstream: name,
      pool: active ? stage.pool(url.origin, { connectTimeoutMs }) : null,
      poolKey: poolKey(url.origin, connectTimeoutMs),
      rt,
      active,
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port === '' ? 80 : Number(url.port),
    })
  })
  return Object.freeze({
    name,
    targets: Object.freeze(targets),
    active: Object.freeze(targets.filter((t) => t.active)),
    byId: new Map(targets.map((t) => [t.id, t])),
    retries: u.retries ?? DEFAULTS.retries,
    connectTimeoutMs,
    headersTimeoutMs: u.headersTimeoutMs ?? DEFAULTS.headersTimeoutMs,
    bodyTimeoutMs: u.bodyTimeoutMs ?? DEFAULTS.bodyTimeoutMs,
    drainTimeoutMs: u.drainTimeoutMs ?? DEFAULTS.drainTimeoutMs,
    p2c: u.balance === 'p2c',
    counters: stage.counters(name),
    outlier,
    slowStartMs: u.slowStartMs ?? DEFAULTS.slowStartMs,
  })
}

/** What a table keeps alive, for `Resources.prune()`. */
export function liveKeys(table: RoutingTable): LiveKeys {
  const pools = new Set<string>()
  const targets = new Set<string>()
  const traffic = new Set<string>()
  for (const u of table.upstreams.values()) {
    for (const t of u.targets) {
      targets.add(t.rt.key)
      if (t.pool !== null) pools.add(t.poolKey)
    }
  }
  const routes = new Set([...table.wildcard, ...[...table.byHost.values()].flat()])
  for (const r of routes) {
    for (const c of r.split) traffic.add(statsKey(r.name, c.upstream.name))
    for (const rule of r.rules) traffic.add(statsKey(r.name, rule.choice.upstream.name))
  }
  return { pools, targets, traffic, upstreams: new Set(table.upstreams.keys()) }
}
