/**
 * Long-lived data-plane resources that outlive any one routing table: connection pools per
 * origin, target runtimes (in-flight, health) and traffic counters. A compiled table points at
 * them; `prune()` releases what the newest table no longer names.
 */
import { Pool } from './pool.js'
import { DEFAULTS } from '../config/defaults.js'
import { rejectCounters } from './request-checks.js'
import { TargetRuntime, TrafficStats, UpstreamCounters } from './stats.js'

export interface PoolOptions {
  connectTimeoutMs: number
}

export class Resources {
  readonly pools = new Map<string, Pool>()
  readonly targets = new Map<string, TargetRuntime>()
  readonly traffic = new Map<string, TrafficStats>()
  readonly upstreams = new Map<string, UpstreamCounters>()
  /** Requests that matched no route (404 NO_ROUTE); not attributable to a route or upstream. */
  noRoute = 0
  /** Requests the proxy refused itself for what the client sent (request-checks.ts); never charged to an upstream. */
  readonly rejected = rejectCounters()
  /** How long a passively failed target stays out when no active health check will bring it back. */
  passiveEjectMs: number = DEFAULTS.passiveEjectMs

  /** One keep-alive pool per origin and connect timeout, shared by every upstream naming it. */
  pool(origin: string, opts: PoolOptions): Pool {
    const key = poolKey(origin, opts.connectTimeoutMs)
    let pool = this.pools.get(key)
    if (!pool) {
      pool = new Pool(origin, {
        connect: { timeout: opts.connectTimeoutMs },
        // undici's defaults: 4 s idle keep-alive, honouring a shorter `Keep-Alive: timeout` from
        // the upstream (minus 1 s), so we do not reuse a socket the upstream is about to close.
        keepAliveTimeout: 4_000,
        keepAliveMaxTimeout: 600_000,
        pipelining: 1,
      })
      // A pool error without a request to report it to must not crash the process.
      pool.on('connectionError', () => {})
      this.pools.set(key, pool)
    }
    return pool
  }

  target(upstream: string, id: string, initiallyHealthy: boolean): TargetRuntime {
    const key = `${upstream}/${id}`
    let rt = this.targets.get(key)
    if (!rt) {
      rt = new TargetRuntime(upstream, id, initiallyHealthy)
      this.targets.set(key, rt)
    }
    return rt
  }

  stats(route: string, upstream: string): TrafficStats {
    const key = `${route}\u0000${upstream}`
    let s = this.traffic.get(key)
    if (!s) {
      s = new TrafficStats(route, upstream)
      this.traffic.set(key, s)
    }
    return s
  }

  counters(upstream: string): UpstreamCounters {
    let c = this.upstreams.get(upstream)
    if (!c) {
      c = new UpstreamCounters(upstream)
      this.upstreams.set(upstream, c)
    }
    return c
  }

  /**
   * A connect failure takes the target out at once (SPEC §4 passive health). With an active
   * health check, that check brings it back; without one, it comes back after `passiveEjectMs`
   * (like NGINX's fail_timeout), and is taken out again if it still fails.
   */
  markFailed(rt: TargetRuntime): void {
    rt.healthy = false
    if (rt.activeCheck || rt.ejectTimer) return
    rt.ejectTimer = setTimeout(() => {
      rt.ejectTimer = undefined
      if (!rt.activeCheck) rt.healthy = true
    }, this.passiveEjectMs)
    rt.ejectTimer.unref()
  }

  /**
   * Releases pools and runtimes the live table no longer uses. Pools are closed gracefully:
   * requests still running on them (on an older table) finish first.
   */
  prune(livePools: ReadonlySet<string>, liveTargets: ReadonlySet<string>): void {
    for (const [key, pool] of this.pools) {
      if (!livePools.has(key)) {
        this.pools.delete(key)
        void pool.close().catch(() => {})
      }
    }
    for (const [key, rt] of this.targets) {
      if (!liveTargets.has(key) && rt.inflight === 0 && rt.websockets.size === 0) {
        if (rt.ejectTimer) clearTimeout(rt.ejectTimer)
        if (rt.wsDrainTimer) clearTimeout(rt.wsDrainTimer)
        this.targets.delete(key)
      }
    }
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()]
    this.pools.clear()
    for (const rt of this.targets.values()) {
      if (rt.ejectTimer) clearTimeout(rt.ejectTimer)
      if (rt.wsDrainTimer) clearTimeout(rt.wsDrainTimer)
    }
    await Promise.all(pools.map((p) => p.destroy().catch(() => {})))
  }
}

export function poolKey(origin: string, connectTimeoutMs: number): string {
  return `${origin}|${connectTimeoutMs}`
}
