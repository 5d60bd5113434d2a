/**
 * The compiled routing table: an immutable, pre-digested form of the state that the hot path
 * reads without allocating. It runs on the control plane and throws on a state it cannot
 * compile, so the table in force stays live (a rejected change changes nothing), and it
 * touches no live resource before the whole table is built.
 *
 * Three ways to build one: `compileTable()` all at once (small states, tests);
 * `compileTableSliced()` the same in slices of a few milliseconds, yielding to the event loop
 * in between (first load, full reload: requests never wait long behind it); `updateTable()`
 * from the table in force and the names a change touched, recompiling only those (every
 * change the fleet makes at run time: its cost does not grow with the number of routes).
 * The structures are persistent: an update shares everything it did not touch with the table
 * it came from, which requests in flight keep reading unchanged.
 */
import { createHash } from 'node:crypto'
import type { Pool } from 'undici'
import { DEFAULTS } from '../config/defaults.js'
import type { FlagSpec, RouteSpec, State, StringMatch, Upstream } from '../config/schema.js'
import { regexTest } from '../config/regex.js'
import { routePosition } from '../state/route-positions.js'
import type { Touched } from '../state/delta.js'
import { seedOf } from './bucket.js'
import { outlierPolicy, release, type OutlierPolicy } from './outlier.js'
import { emptyRadix, RadixBuilder, radixGet, radixSet, type Radix } from './radix.js'
import type { LiveCheck, PruneCandidates, Resources, Staging } from './resources.js'
import { poolKey, type TlsConnect } from './resources.js'
import { EMPTY_ROUTES, RoutesBuilder, updateRoutes, type Routes } from './route-index.js'
import type { MirrorStats, TargetRuntime, TrafficStats, UpstreamCounters } from './stats.js'

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
  /** how to talk TLS to an https:// target (WebSocket connections too); null for http:// */
  readonly tls: TlsConnect | null
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
  /** the circuit breaker's bounds; null: none (the upstream takes whatever comes) */
  readonly breaker: CBreaker | null
}

/** `circuitBreaker` compiled: an unset bound is Infinity, so a check is two compares. */
export interface CBreaker {
  readonly maxConcurrent: number
  readonly maxPending: number
}

/**
 * A route's way to one upstream, with the counters for that pair. The upstream is named, not
 * held: the request resolves it in the table it entered with, so a change to an upstream
 * recompiles that upstream alone, never the routes that name it.
 */
export interface Choice {
  readonly upstream: string
  readonly stats: TrafficStats
  /** the route's mirror, on every choice but the shadow upstream's own (a copy to itself is pointless) */
  readonly mirror: CMirror | null
  /** the route's maxBodyBytes (Infinity: no bound); here so the request reads it where it is */
  readonly maxBodyBytes: number
  /** Upgrade protocols (lowercase) the route tunnels besides websocket; null: websocket only */
  readonly upgrades: ReadonlySet<string> | null
}

/** A route's compiled `mirror`: the one object a mirrored request reads. */
export interface CMirror {
  readonly route: string
  readonly upstream: string
  /** percent / 100, compared with Math.random() */
  readonly share: number
  readonly methods: ReadonlySet<string>
  readonly maxBodyBytes: number
  readonly maxConcurrent: number
  readonly ignore: ReadonlySet<string>
  readonly stats: MirrorStats
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
  readonly mirror: CMirror | null
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
  /** the matching structure: host, then longest path prefix (route-index.ts) */
  readonly routes: Routes
  /** every route by name: what an update replaces (control path only) */
  readonly byName: Radix<CRoute>
  readonly upstreams: ReadonlyMap<string, CUpstream>
  readonly flags: readonly CFlag[]
  /** the x-switchyard-flags value when no flag depends on the user; null when some do */
  readonly staticFlags: string | null
}

export const EMPTY_TABLE: RoutingTable = Object.freeze({
  revision: 0,
  routes: EMPTY_ROUTES,
  byName: emptyRadix<CRoute>(),
  upstreams: new Map(),
  flags: Object.freeze([]),
  staticFlags: '',
})

export interface CompileOptions {
  /** Health a target starts with when it is new to this process (config targets healthy, run-time ones after a check). */
  initiallyHealthy?: (upstream: string, targetId: string) => boolean
  /**
   * The PEM contents of an upstream's `tls.ca` files, read by the control plane (the data plane
   * reads no files); throws with the file's path when one cannot be used. Without it an upstream
   * naming `tls.ca` does not compile.
   */
  readCa?: (paths: readonly string[]) => string[]
}

function valueTest(m: StringMatch): ValueTest {
  if (typeof m === 'string') return (v) => v === m
  // RE2, not V8's backtracking engine: a client chooses the value, so matching must stay linear (config/regex.ts).
  return regexTest(m.regex)
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

function compileFlags(state: State): { flags: readonly CFlag[]; staticFlags: string | null } {
  const flags = Object.entries(state.flags).map(([name, f]) => compileFlag(name, f))
  const staticFlags = flags.every((f) => f.mode !== 2)
    ? flags.map((f) => `${f.name}=${f.mode === 1 ? 'on' : 'off'}`).join(',')
    : null
  return { flags: Object.freeze(flags), staticFlags }
}

/** One route; throws when it names an upstream `upstreams` does not have, or its weights are all 0. */
function compileRoute(r: RouteSpec, upstreams: ReadonlyMap<string, CUpstream>, stage: Staging): CRoute {
  const mirror = compileMirror(r, upstreams, stage)
  const upgrades = r.upgrades === undefined || r.upgrades.length === 0 ? null : new Set(r.upgrades.map((p) => p.toLowerCase()))
  const choice = (name: string): Choice => {
    if (!upstreams.has(name)) throw new Error(`route "${r.name}" names unknown upstream "${name}"`)
    return Object.freeze({ upstream: name, stats: stage.stats(r.name, name), mirror: mirror?.upstream === name ? null : mirror, maxBodyBytes: r.maxBodyBytes ?? Infinity, upgrades })
  }
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
    mirror,
  })
}

/** A route's mirror; null without one, or at 0 % (so an idle mirror costs requests nothing). */
function compileMirror(r: RouteSpec, upstreams: ReadonlyMap<string, CUpstream>, stage: Staging): CMirror | null {
  const m = r.mirror
  if (m === undefined) return null
  if (!upstreams.has(m.upstream)) throw new Error(`route "${r.name}" mirrors to unknown upstream "${m.upstream}"`)
  if (m.percent <= 0) return null
  return Object.freeze({
    route: r.name,
    upstream: m.upstream,
    share: m.percent / 100,
    methods: new Set(m.methods ?? DEFAULTS.mirror.methods),
    maxBodyBytes: m.maxBodyBytes ?? DEFAULTS.mirror.maxBodyBytes,
    maxConcurrent: m.maxConcurrent ?? DEFAULTS.mirror.maxConcurrent,
    ignore: new Set(m.ignore ?? []),
    stats: stage.mirror(r.name, m.upstream),
  })
}

/**
 * Builds the table for `state` all at once. Pools, target runtimes and stats come from `res` so
 * they survive the swap. Every change to `res` (new runtimes, pools and counters, health and
 * slow-start changes) is staged and applied only after the last thing that can throw.
 */
export function compileTable(state: State, res: Resources, opts: CompileOptions = {}): RoutingTable {
  const build = new FullBuild(state, res, opts)
  while (!build.step(Infinity));
  return build.finish()
}

/**
 * `compileTable()` in slices of about `sliceMs` of work, yielding to the event loop between
 * them, so requests keep flowing while a large state compiles. Nothing is live before the
 * returned table is swapped in; the caller must not change `res` meanwhile (the follower
 * runs one compile at a time).
 */
export async function compileTableSliced(state: State, res: Resources, opts: CompileOptions = {}, sliceMs = 2): Promise<RoutingTable> {
  const build = new FullBuild(state, res, opts)
  while (!build.step(sliceMs)) await new Promise<void>((resolve) => setImmediate(resolve))
  return build.finish()
}

/** A whole compile that can stop after a slice of work and carry on later. */
class FullBuild {
  private readonly stage: Staging
  private readonly upstreams = new Map<string, CUpstream>()
  private readonly upstreamNames: string[]
  /** Both structures are built a route at a time inside the slices: built at the end, 10,000 routes would stall the loop for tens of ms. */
  private readonly routes = new RoutesBuilder()
  private readonly byName = new RadixBuilder<CRoute>()
  private u = 0
  private r = 0

  constructor(
    private readonly state: State,
    res: Resources,
    private readonly opts: CompileOptions,
  ) {
    this.stage = res.stage()
    this.upstreamNames = Object.keys(state.upstreams)
  }

  /** Compiles for about `budgetMs`; true when everything is compiled. */
  step(budgetMs: number): boolean {
    const until = budgetMs === Infinity ? Infinity : performance.now() + budgetMs
    const healthyAtStart = this.opts.initiallyHealthy ?? (() => true)
    const { state, stage } = this
    while (this.u < this.upstreamNames.length) {
      const name = this.upstreamNames[this.u++]!
      this.upstreams.set(name, compileUpstream(name, state.upstreams[name]!, stage, healthyAtStart, this.opts))
      if ((this.u & 15) === 0 && performance.now() > until) return false
    }
    while (this.r < state.routes.length) {
      const route = compileRoute(state.routes[this.r++]!, this.upstreams, stage)
      this.routes.add(route)
      this.byName.set(route.name, route)
      if ((this.r & 63) === 0 && performance.now() > until) return false
    }
    return true
  }

  finish(): RoutingTable {
    const { flags, staticFlags } = compileFlags(this.state)
    const routes = this.routes.finish()
    const byName = this.byName.finish()
    this.stage.commit()
    return Object.freeze({ revision: this.state.revision, routes, byName, upstreams: this.upstreams, flags, staticFlags })
  }
}

/**
 * The table for `state`, made from `prev` (the table of the state `state` was changed from) by
 * recompiling only what `touched` names: those upstreams, routes and, when a flag changed, the
 * (few) flags. Its cost follows the size of the change, not of the state. Throws, touching
 * nothing, when the result cannot be compiled (a route naming a missing upstream...). Also
 * returns what the swap may release, for `Resources.prune()`.
 */
export function updateTable(
  prev: RoutingTable,
  state: State,
  touched: Touched,
  res: Resources,
  opts: CompileOptions = {},
  /** the new spec of a touched route (undefined: deleted) when the caller has it, which spares a pass over every route */
  specOf?: (name: string) => RouteSpec | undefined,
): { table: RoutingTable; released: PruneCandidates } {
  const healthyAtStart = opts.initiallyHealthy ?? (() => true)
  const stage = res.stage()
  const released: PruneCandidates = { targets: [], traffic: [], mirrors: [], pools: [], upstreams: [] }

  let upstreams = prev.upstreams
  if (touched.upstreams.length > 0) {
    const next = new Map(prev.upstreams)
    for (const name of touched.upstreams) {
      const old = prev.upstreams.get(name)
      if (old !== undefined) {
        for (const t of old.targets) {
          released.targets.push(t.rt)
          released.pools.push(t.poolKey)
        }
        released.upstreams.push(name)
      }
      const spec = Object.hasOwn(state.upstreams, name) ? state.upstreams[name] : undefined
      if (spec === undefined) next.delete(name)
      else next.set(name, compileUpstream(name, spec, stage, healthyAtStart, opts))
    }
    upstreams = next
  }

  let routes = prev.routes
  let byName = prev.byName
  const specs = specOf === undefined ? routeSpecs(state, touched.routes) : undefined
  for (const name of touched.routes) {
    const old = radixGet(prev.byName, name) ?? null
    const spec = specs === undefined ? specOf!(name) : specs.get(name)
    const route = spec === undefined ? null : compileRoute(spec, upstreams, stage)
    if (old !== null) {
      released.traffic.push(...old.split.map((c) => c.stats), ...old.rules.map((r) => r.choice.stats))
      if (old.mirror !== null) released.mirrors.push(old.mirror.stats)
    }
    routes = updateRoutes(routes, old, route, (n) => rankOf(state, n))
    byName = radixSet(byName, name, route ?? undefined)
  }

  // A removed upstream must not be named by a route the change left alone.
  const removed = touched.upstreams.filter((n) => !upstreams.has(n))
  if (removed.length > 0) {
    for (const r of state.routes) {
      for (const n of removed) {
        if (Object.hasOwn(r.split, n) || (r.rules ?? []).some((rule) => rule.upstream === n) || r.mirror?.upstream === n) {
          throw new Error(`route "${r.name}" names unknown upstream "${n}"`)
        }
      }
    }
  }

  const { flags, staticFlags } = touched.flags.length > 0 ? compileFlags(state) : prev
  stage.commit()
  const table = Object.freeze({ revision: state.revision, routes, byName, upstreams, flags, staticFlags })
  return { table, released }
}

/** The specs of the named routes in `state`, by their positions (see `routePosition`). */
function routeSpecs(state: State, names: readonly string[]): Map<string, RouteSpec> {
  const out = new Map<string, RouteSpec>()
  for (const name of names) {
    const i = routePosition(state.routes, name)
    if (i >= 0) out.set(name, state.routes[i]!)
  }
  return out
}

/** A route's declaration position (its index in the state's routes). */
function rankOf(state: State, name: string): number {
  const i = routePosition(state.routes, name)
  return i < 0 ? state.routes.length : i
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
  opts: CompileOptions,
): CUpstream {
  const connectTimeoutMs = u.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs
  const tls = upstreamTls(name, u, opts)
  const hasCheck = u.healthCheck !== undefined
  const outlier = outlierPolicy(u.outlierDetection)
  const targets = u.targets.map((t): CTarget => {
    const url = new URL(t.url)
    const https = url.protocol === 'https:'
    const poolOpts = { connectTimeoutMs, tls: https ? tls : null }
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
      pool: active ? stage.pool(url.origin, poolOpts) : null,
      poolKey: poolKey(url.origin, poolOpts),
      tls: poolOpts.tls,
      rt,
      active,
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port === '' ? (https ? 443 : 80) : Number(url.port),
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
    breaker: u.circuitBreaker === undefined ? null : Object.freeze({ maxConcurrent: u.circuitBreaker.maxConcurrent ?? Infinity, maxPending: u.circuitBreaker.maxPending ?? Infinity }),
  })
}

/** The connect options of an upstream's https:// targets; one object shared by its targets. */
function upstreamTls(name: string, u: Upstream, opts: CompileOptions): TlsConnect {
  const t = u.tls
  const paths = t?.ca === undefined ? [] : typeof t.ca === 'string' ? [t.ca] : t.ca
  let ca: string[] | undefined
  if (paths.length > 0) {
    if (opts.readCa === undefined) throw new Error(`upstream ${name}: tls.ca needs the control plane to read its files`)
    ca = opts.readCa(paths)
  }
  const rejectUnauthorized = t?.insecureSkipVerify !== true
  // Pools are shared per origin: two upstreams with different TLS settings must not share one.
  const id = createHash('sha256')
    .update(JSON.stringify([ca ?? null, t?.servername ?? null, rejectUnauthorized]))
    .digest('hex')
    .slice(0, 16)
  return Object.freeze({ ...(ca === undefined ? {} : { ca }), ...(t?.servername === undefined ? {} : { servername: t.servername }), rejectUnauthorized, id })
}

/** What `table` keeps alive, asked per resource by `Resources.prune()`. */
export function liveCheck(table: RoutingTable): LiveCheck {
  let pools: Set<string> | undefined
  return {
    pool(key) {
      if (pools === undefined) {
        pools = new Set()
        for (const u of table.upstreams.values()) for (const t of u.active) pools.add(t.poolKey)
      }
      return pools.has(key)
    },
    target: (upstream, id) => table.upstreams.get(upstream)?.byId.has(id) === true,
    traffic(route, upstream) {
      const r = radixGet(table.byName, route)
      return r !== undefined && (r.split.some((c) => c.upstream === upstream) || r.rules.some((x) => x.choice.upstream === upstream))
    },
    mirror(route, upstream) {
      const r = radixGet(table.byName, route)
      return r !== undefined && r.mirror !== null && r.mirror.upstream === upstream
    },
    upstream: (name) => table.upstreams.has(name),
  }
}
