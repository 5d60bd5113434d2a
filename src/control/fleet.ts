/**
 * This instance's place in the fleet: it registers itself in the store's instance registry
 * (id, applied revision, in-flight per target, how far behind it is) with a short TTL, and it
 * answers fleet-wide questions from that registry: who is live and who lags, has every
 * instance applied a revision (`waitApplied`), how many requests are in flight to a target
 * anywhere (drains).
 */
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { Dataplane } from '../dataplane/server.js'
import type { InstanceInfo, Store } from '../store/store.js'
import type { Follower } from './follower.js'

export interface FleetOptions {
  store: Store
  dataplane: Dataplane
  follower: Follower
  /** Registry heartbeat interval. Default 1 s. */
  heartbeatMs?: number
  /** Registry TTL: an instance silent for this long leaves the fleet. Default 5 s. */
  instanceTtlMs?: number
  /** Lag beyond which an instance is marked a laggard. Default 5 s. */
  behindAlertMs?: number
}

/** A registry entry as the admin API shows it. */
export interface FleetInstance extends InstanceInfo {
  /** behind the store's revision for longer than the alert threshold */
  laggard: boolean
}

/** How often waits re-read the registry: fast enough to answer within ms, light on the store. */
const POLL_MS = 5
const DRAIN_POLL_MS = 10
/**
 * The registry hears of an applied state this long after it (one report for every state
 * applied meanwhile), not at once: at once, 20 instances would report while the last of them
 * still apply, on the same cores, and a burst of writes would cost a report each.
 * `?waitApplied` answers this much later.
 */
const REPORT_DELAY_MS = 50

export class Fleet {
  private readonly host = hostname()
  readonly instanceId = `${this.host}:${process.pid}:${randomBytes(3).toString('hex')}`
  private timer: NodeJS.Timeout | undefined
  private reportTimer: NodeJS.Timeout | undefined
  private closed = false

  constructor(private readonly opts: FleetOptions) {}

  private get alertMs(): number {
    return this.opts.behindAlertMs ?? 5_000
  }

  /** Registers now, again shortly after applied states (so waitApplied answers soon), and on a timer. */
  async start(): Promise<void> {
    this.opts.follower.onApplied(() => this.reportSoon())
    await this.heartbeat()
    this.timer = setInterval(() => void this.heartbeat(), this.opts.heartbeatMs ?? 1_000)
    this.timer.unref()
  }

  /** What else this instance publishes in the registry (its rolling replacements). */
  private extra: () => Pick<InstanceInfo, 'replacements'> = () => ({})

  publish(extra: () => Pick<InstanceInfo, 'replacements'>): void {
    this.extra = extra
  }

  /** Publishes this instance's entry shortly (a burst of changes makes one write). */
  reportSoon(): void {
    if (this.reportTimer !== undefined || this.closed) return
    this.reportTimer = setTimeout(() => {
      this.reportTimer = undefined
      void this.heartbeat()
    }, REPORT_DELAY_MS)
    this.reportTimer.unref()
  }

  /**
   * In-flight requests per `upstream/target` in this process, for the targets that have any:
   * with 1,000 targets a full list would make every heartbeat of every instance ~25 KB.
   */
  inflight(): Record<string, number> {
    const out: Record<string, number> = {}
    for (const [key, rt] of this.opts.dataplane.resources.targets) if (rt.inflight > 0) out[key] = rt.inflight
    return out
  }

  /** Never rejects: a registry write that fails is retried by the next heartbeat. */
  async heartbeat(): Promise<void> {
    const { store, follower } = this.opts
    if (this.closed || !store.connected) return
    const info: Omit<InstanceInfo, 'lastSeen'> = {
      id: this.instanceId,
      host: this.host,
      pid: process.pid,
      appliedRevision: follower.state.revision,
      digest: follower.digest,
      behindMs: follower.behindMs(),
      inflight: this.inflight(),
      ...this.extra(),
    }
    await store.register(info, this.opts.instanceTtlMs ?? 5_000).catch(() => {})
  }

  /**
   * The live instances, each marked `laggard` when its applied revision has been below the
   * store's for longer than the alert threshold: by its own report, or by how long this
   * instance has known of a newer revision (so an instance that stopped reporting honestly
   * is still caught).
   */
  async instances(): Promise<FleetInstance[]> {
    const { store, follower } = this.opts
    const [list, storeRevision] = await Promise.all([store.instances(), store.revision().catch(() => null)])
    const current = storeRevision ?? follower.state.revision
    const now = Date.now()
    // Replacement records are read where they are needed (GET .../replace), not listed with the fleet.
    return list.map(({ replacements: _replacements, ...i }) => {
      const since = follower.newerKnownSince(i.appliedRevision)
      const behind = i.appliedRevision < current
      const laggard = behind && ((i.behindMs ?? 0) > this.alertMs || (since !== null && now - since > this.alertMs))
      return { ...i, laggard }
    })
  }

  /**
   * Waits until every live instance has applied `revision`; resolves with the laggards
   * (empty when all applied) at the deadline.
   */
  async waitApplied(revision: number, timeoutMs: number): Promise<InstanceInfo[]> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const laggards = (await this.opts.store.instances()).filter((i) => i.appliedRevision < revision)
      if (laggards.length === 0 || Date.now() >= deadline) return laggards
      await new Promise((r) => setTimeout(r, Math.min(POLL_MS, Math.max(0, deadline - Date.now()))))
    }
  }

  /**
   * In-flight requests per target (`upstream/id`), summed over the fleet like `targetInflight`:
   * one registry read for a whole list of targets.
   */
  async inflightByTarget(): Promise<Map<string, number>> {
    const sums = new Map(Object.entries(this.inflight()))
    let instances
    try {
      instances = await this.opts.store.instances()
    } catch {
      return sums
    }
    for (const i of instances) {
      if (i.id === this.instanceId) continue
      for (const [key, n] of Object.entries(i.inflight)) sums.set(key, (sums.get(key) ?? 0) + n)
    }
    return sums
  }

  /**
   * In-flight requests to one target (`upstream/id`), summed over the fleet: this instance's
   * count live, the others' as of their last heartbeat. `settled` is false while another
   * instance has not yet reported `minRevision`: its count may predate the change (a request
   * it started just before it applied a drain).
   */
  async targetInflight(key: string, minRevision = 0): Promise<{ inflight: number; settled: boolean }> {
    const local = this.inflight()[key] ?? 0
    let instances
    try {
      instances = await this.opts.store.instances()
    } catch {
      // Store unreachable: the local count is all we can know.
      return { inflight: local, settled: true }
    }
    let inflight = local
    let settled = true
    for (const i of instances) {
      if (i.id === this.instanceId) continue
      inflight += i.inflight[key] ?? 0
      if (i.appliedRevision < minRevision) settled = false
    }
    return { inflight, settled }
  }

  /**
   * Waits until no live instance has a request in flight to `key` and every instance applied
   * `revision` (the drain), or until `waitMs` passed.
   */
  async waitDrained(key: string, revision: number, waitMs: number): Promise<{ drained: boolean; inflight: number }> {
    const deadline = Date.now() + waitMs
    for (;;) {
      const f = await this.targetInflight(key, revision)
      if (f.inflight === 0 && f.settled) return { drained: true, inflight: 0 }
      if (Date.now() >= deadline) return { drained: false, inflight: f.inflight }
      await new Promise((r) => setTimeout(r, Math.min(DRAIN_POLL_MS, Math.max(1, deadline - Date.now()))))
    }
  }

  /** Stops the heartbeat and leaves the registry (a dead instance would leave by TTL). */
  async close(): Promise<void> {
    this.closed = true
    if (this.timer) clearInterval(this.timer)
    if (this.reportTimer) clearTimeout(this.reportTimer)
    this.timer = undefined
    this.reportTimer = undefined
    await this.opts.store.unregister(this.instanceId).catch(() => {})
  }
}
