/**
 * Long-lived data-plane resources that outlive any one routing table: connection pools per
 * origin, target runtimes (in-flight, health) and traffic counters. A compiled table points at
 * them; `prune()` releases what the newest table no longer names, so deleted routes, upstreams
 * and targets leave no memory and no `/metrics` series behind.
 */
import { Pool } from 'undici'
import { DEFAULTS } from '../config/defaults.js'
import { rejectCounters } from './request-checks.js'
import { limitCounters, MirrorStats, TargetRuntime, TrafficStats, UpstreamCounters } from './stats.js'

/** TLS connect options of an https:// target, as undici and node:tls take them. */
export interface TlsConnect {
  /** PEM CA certificates; Node's default CAs when absent */
  readonly ca?: readonly string[]
  readonly servername?: string
  readonly rejectUnauthorized: boolean
  /** a digest of the above, part of the pool key */
  readonly id: string
}

export interface PoolOptions {
  connectTimeoutMs: number
  /** null for http:// origins */
  tls: TlsConnect | null
}

/** Whether the table in force still uses a resource (see `liveCheck()` in table.ts). */
export interface LiveCheck {
  pool(key: string): boolean
  target(upstream: string, id: string): boolean
  traffic(route: string, upstream: string): boolean
  /** the route mirrors to that upstream */
  mirror(route: string, upstream: string): boolean
  upstream(name: string): boolean
}

/** What a swap may have released: the resources of what the change replaced or removed. */
export interface PruneCandidates {
  targets: TargetRuntime[]
  traffic: TrafficStats[]
  mirrors: MirrorStats[]
  pools: string[]
  upstreams: string[]
}

export function statsKey(route: string, upstream: string): string {
  return `${route}\u0000${upstream}`
}

export class Resources {
  readonly pools = new Map<string, Pool>()
  readonly targets = new Map<string, TargetRuntime>()
  readonly traffic = new Map<string, TrafficStats>()
  /** per (route, shadow upstream) of the routes that mirror */
  readonly mirrors = new Map<string, MirrorStats>()
  /** share of requests handed to the access log (0: off, the default) */
  accessSample = 0
  readonly upstreams = new Map<string, UpstreamCounters>()
  /**
   * Targets that carry (or carried) a WebSocket: what a swap checks for WebSockets to drain
   * (drain.ts). Added to by the WebSocket proxy; drained of idle ones by that check.
   */
  readonly wsTargets = new Set<TargetRuntime>()
  /** Requests that matched no route (404 NO_ROUTE); not attributable to a route or upstream. */
  noRoute = 0
  /** Requests the proxy refused itself for what the client sent (request-checks.ts); never charged to an upstream. */
  readonly rejected = rejectCounters()
  /** Clients cut off by a listen.limits or maxBodyBytes bound (stats.ts LimitReason); never charged to an upstream. */
  readonly limited = limitCounters()
  /** How long a passively failed target stays out when no active health check will bring it back. */
  passiveEjectMs: number = DEFAULTS.passiveEjectMs
  /** Tables compiled so far: targets new after the first one are joining a running upstream. */
  compiled = 0

  target(upstream: string, id: string, initiallyHealthy: boolean): TargetRuntime {
    return getOrMake(this.targets, `${upstream}/${id}`, () => new TargetRuntime(upstream, id, initiallyHealthy, this.counters(upstream)))
  }

  stats(route: string, upstream: string): TrafficStats {
    return getOrMake(this.traffic, statsKey(route, upstream), () => new TrafficStats(route, upstream))
  }

  counters(upstream: string): UpstreamCounters {
    return getOrMake(this.upstreams, upstream, () => new UpstreamCounters(upstream, this))
  }

  /** A staging view for compiling a table: see `Staging`. */
  stage(): Staging {
    return new Staging(this)
  }

  /**
   * A connect failure takes the target out at once (passive health). With an active
   * health check, that check brings it back; without one, it comes back after `passiveEjectMs`
   * (like NGINX's fail_timeout), and is taken out again if it still fails.
   */
  markFailed(rt: TargetRuntime, reason = 'connect failed'): void {
    rt.healthy = false
    rt.downReason = reason
    if (rt.activeCheck || rt.ejectTimer) return
    rt.passiveUntil = Date.now() + this.passiveEjectMs
    rt.ejectTimer = setTimeout(() => {
      rt.ejectTimer = undefined
      rt.passiveUntil = 0
      if (!rt.activeCheck) rt.healthy = true
    }, this.passiveEjectMs)
    rt.ejectTimer.unref()
  }

  /**
   * Removed targets still serving requests or WebSockets: their runtime (and their upstream's
   * counters, which it points at) stays until they are done; every later prune checks them again.
   */
  private readonly lingering = new Set<TargetRuntime>()

  /**
   * Releases what the live table no longer uses: the `candidates` a change released, or
   * everything this holds when none are given (after a whole compile). Pools are closed
   * gracefully: requests still running on them (on an older table) finish first. Counters of
   * a removed route (or upstream) go at once: requests still finishing on an older table count
   * into an object nobody reads any more.
   */
  prune(live: LiveCheck, candidates?: PruneCandidates): void {
    const pools = candidates?.pools ?? [...this.pools.keys()]
    for (const key of pools) {
      const pool = this.pools.get(key)
      if (pool !== undefined && !live.pool(key)) {
        this.pools.delete(key)
        void pool.close().catch(() => {})
      }
    }
    const upstreams = new Set(candidates?.upstreams ?? this.upstreams.keys())
    for (const rt of candidates?.targets ?? this.targets.values()) this.lingering.add(rt)
    for (const rt of this.lingering) {
      if (live.target(rt.upstream, rt.id)) this.lingering.delete(rt)
      else if (rt.inflight === 0 && rt.websockets.size === 0) {
        this.lingering.delete(rt)
        if (this.targets.get(rt.key) === rt) this.targets.delete(rt.key)
        clearTimers(rt)
        upstreams.add(rt.upstream)
      }
    }
    for (const stats of candidates?.traffic ?? this.traffic.values()) {
      const key = statsKey(stats.route, stats.upstream)
      if (this.traffic.get(key) === stats && !live.traffic(stats.route, stats.upstream)) this.traffic.delete(key)
    }
    for (const stats of candidates?.mirrors ?? this.mirrors.values()) {
      const key = statsKey(stats.route, stats.upstream)
      if (this.mirrors.get(key) === stats && !live.mirror(stats.route, stats.upstream)) this.mirrors.delete(key)
    }
    const lingeringUpstreams = new Set([...this.lingering].map((rt) => rt.upstream))
    for (const name of upstreams) if (!live.upstream(name) && !lingeringUpstreams.has(name)) this.upstreams.delete(name)
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()]
    this.pools.clear()
    for (const rt of this.targets.values()) clearTimers(rt)
    await Promise.all(pools.map((p) => p.destroy().catch(() => {})))
  }
}

/** No I/O: an undici Pool connects on its first dispatch. */
function newPool(origin: string, opts: PoolOptions): Pool {
  const pool = new Pool(origin, {
    connect: opts.tls === null ? { timeout: opts.connectTimeoutMs } : { timeout: opts.connectTimeoutMs, ...tlsOptions(opts.tls) },
    // undici's defaults: 4 s idle keep-alive, honouring a shorter `Keep-Alive: timeout` from
    // the upstream (minus 1 s), so we do not reuse a socket the upstream is about to close.
    keepAliveTimeout: 4_000,
    keepAliveMaxTimeout: 600_000,
    pipelining: 1,
    // undici 8 would offer HTTP/2 by ALPN to every https:// origin: an upstream speaks HTTP/1.1
    // (as its ALPN below says) until it is configured otherwise.
    allowH2: false,
  })
  // A pool error without a request to report it to must not crash the process.
  pool.on('connectionError', () => {})
  return pool
}

/** node:tls options of a TLS target; HTTP/1.1 only, said in ALPN. */
export function tlsOptions(t: TlsConnect): { ca?: string[]; servername?: string; rejectUnauthorized: boolean; ALPNProtocols: string[] } {
  return {
    ...(t.ca === undefined ? {} : { ca: [...t.ca] }),
    ...(t.servername === undefined ? {} : { servername: t.servername }),
    rejectUnauthorized: t.rejectUnauthorized,
    ALPNProtocols: ['http/1.1'],
  }
}

/**
 * What compiling a table needs from the resources, without touching them: existing pools,
 * runtimes and counters are handed out as they are; new ones are made aside; changes to live
 * runtimes are queued. `commit()` registers the new objects and runs the queued changes in one
 * go, once the whole table is built, so a state that fails to compile leaves everything as it
 * was. Nothing in `commit()` throws.
 */
export class Staging {
  private readonly pools = new Map<string, Pool>()
  private readonly targets = new Map<string, TargetRuntime>()
  private readonly traffic = new Map<string, TrafficStats>()
  private readonly mirrors = new Map<string, MirrorStats>()
  private readonly upstreams = new Map<string, UpstreamCounters>()
  private readonly effects: (() => void)[] = []
  /** whether this is the first table of the process (its targets start together) */
  readonly firstTable: boolean

  constructor(private readonly res: Resources) {
    this.firstTable = res.compiled === 0
  }

  /** One keep-alive pool per origin and connect timeout, shared by every upstream naming it. */
  pool(origin: string, opts: PoolOptions): Pool {
    const key = poolKey(origin, opts)
    return this.res.pools.get(key) ?? getOrMake(this.pools, key, () => newPool(origin, opts))
  }

  /** The target's runtime; `isNew` when this process has none yet. */
  target(upstream: string, id: string, initiallyHealthy: boolean): { rt: TargetRuntime; isNew: boolean } {
    const key = `${upstream}/${id}`
    const rt = this.res.targets.get(key)
    if (rt) return { rt, isNew: false }
    return { rt: getOrMake(this.targets, key, () => new TargetRuntime(upstream, id, initiallyHealthy, this.counters(upstream))), isNew: true }
  }

  stats(route: string, upstream: string): TrafficStats {
    const key = statsKey(route, upstream)
    return this.res.traffic.get(key) ?? getOrMake(this.traffic, key, () => new TrafficStats(route, upstream))
  }

  mirror(route: string, upstream: string): MirrorStats {
    const key = statsKey(route, upstream)
    return this.res.mirrors.get(key) ?? getOrMake(this.mirrors, key, () => new MirrorStats(route, upstream))
  }

  counters(upstream: string): UpstreamCounters {
    return this.res.upstreams.get(upstream) ?? getOrMake(this.upstreams, upstream, () => new UpstreamCounters(upstream, this.res))
  }

  /** Queues a change to live state for `commit()`. */
  later(effect: () => void): void {
    this.effects.push(effect)
  }

  /** Applies everything at once; `res.compiled` counts the tables made. */
  commit(): void {
    const res = this.res
    for (const [k, v] of this.pools) res.pools.set(k, v)
    for (const [k, v] of this.upstreams) res.upstreams.set(k, v)
    for (const [k, v] of this.targets) res.targets.set(k, v)
    for (const [k, v] of this.traffic) res.traffic.set(k, v)
    for (const [k, v] of this.mirrors) res.mirrors.set(k, v)
    for (const effect of this.effects) effect()
    res.compiled++
  }
}

function getOrMake<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let v = map.get(key)
  if (v === undefined) {
    v = make()
    map.set(key, v)
  }
  return v
}

function clearTimers(rt: TargetRuntime): void {
  if (rt.ejectTimer) clearTimeout(rt.ejectTimer)
  if (rt.ejectionTimer) clearTimeout(rt.ejectionTimer)
  if (rt.wsDrainTimer) clearTimeout(rt.wsDrainTimer)
}

export function poolKey(origin: string, opts: PoolOptions): string {
  return opts.tls === null ? `${origin}|${opts.connectTimeoutMs}` : `${origin}|${opts.connectTimeoutMs}|${opts.tls.id}`
}
