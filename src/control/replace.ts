/**
 * Rolling replacement of an upstream's targets (Kubernetes' RollingUpdate, for targets): add
 * new targets up to `maxSurge` beyond the old count, wait until each is healthy, drain an old
 * one with wait and remove it, while at most `maxUnavailable` fewer than the wanted count are
 * serving; repeat until the upstream has exactly the new targets. Every step is its own
 * audited write (reason `replace <id>: add 10.0.0.5:80 (1/3)`).
 *
 * It runs in the instance (or worker) that accepted it. One at a time per upstream, fleet-wide:
 * the driver holds the store lease `replace:<upstream>` while it runs. Its record is published
 * in the instance registry, so every instance and worker answers `GET` with it. If the driving
 * instance stops, the replacement stops where it was (its lease and record expire with it);
 * POSTing the same targets again resumes it, since targets already added are kept and old ones
 * already removed stay removed.
 */
import { connect } from 'node:net'
import { randomBytes } from 'node:crypto'
import type { Target } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import type { ControlPlane } from './control-plane.js'
import { LeaseKeeper } from './lease.js'
import { addTarget, removeTarget, setTargetState, upstreamOf } from './mutations.js'

export const REPLACE_DEFAULTS = { maxSurge: 1, maxUnavailable: 0, healthyTimeoutMs: 60_000, drainWaitMs: 30_000 }

export interface ReplaceRequest {
  targets: Target[]
  maxSurge: number
  maxUnavailable: number
  healthyTimeoutMs: number
  drainWaitMs: number
  actor: string
  reason?: string | undefined
}

export type ReplacePhase = 'running' | 'succeeded' | 'failed'

export interface Replacement {
  id: string
  upstream: string
  phase: ReplacePhase
  /** what it does now, or did last */
  step: string
  done: number
  total: number
  message: string
  targets: { id: string; url: string }[]
  maxSurge: number
  maxUnavailable: number
  healthyTimeoutMs: number
  drainWaitMs: number
  actor: string
  startedAt: string
  endedAt?: string
}

/** This instance's view of a target's health: `undefined` when it has not applied the target yet. */
export type HealthOf = (upstream: string, id: string) => { healthy: boolean; reason?: string | undefined } | undefined

const POLL_MS = 100
const CONNECT_TIMEOUT_MS = 1_000
/** The lease's TTL: a driver that died frees the upstream for another replacement this soon. */
const LEASE_TTL_MS = 5_000

const leaseName = (upstream: string) => `replace:${upstream}`

function isReplacement(x: unknown, upstream: string): x is Replacement {
  const r = x as Partial<Replacement> | null
  return typeof r === 'object' && r !== null && r.upstream === upstream && typeof r.id === 'string' && typeof r.startedAt === 'string'
}

export class Replacer {
  private readonly records = new Map<string, Replacement>()
  private readonly running = new Map<string, Promise<void>>()
  /** the lease each running replacement holds (by replacement id): one that lost it stops at its next step */
  private readonly leases = new Map<string, LeaseKeeper>()
  private stopped = false

  constructor(
    private readonly control: ControlPlane,
    private readonly healthOf: HealthOf,
  ) {
    control.fleet.publish(() => (this.records.size === 0 ? {} : { replacements: [...this.records.values()].map((r) => ({ ...r })) }))
  }

  /** The running or last replacement of `upstream`: this instance's, or the newest any live instance publishes. */
  async get(upstream: string): Promise<Replacement | undefined> {
    let newest = this.records.get(upstream)
    const instances = await this.control.store.instances().catch(() => [])
    for (const i of instances) {
      if (i.id === this.control.instanceId) continue
      for (const r of i.replacements ?? []) {
        if (isReplacement(r, upstream) && (newest === undefined || r.startedAt > newest.startedAt)) newest = r
      }
    }
    return newest === undefined ? undefined : { ...newest }
  }

  /**
   * Checks and starts a replacement; answers its record at once (the caller answers 202).
   * 409 while one runs for the upstream; 400 for an id given twice or an id already used
   * with another url.
   */
  async start(upstream: string, req: ReplaceRequest): Promise<Replacement> {
    if (this.stopped) throw new SwitchyardError('SHUTTING_DOWN')
    const current = this.records.get(upstream)
    if (current?.phase === 'running') throw this.busy(current)
    const old = upstreamOf(this.control.state, upstream).targets
    const seen = new Set<string>()
    for (const t of req.targets) {
      if (seen.has(t.id)) throw new SwitchyardError('VALIDATION_FAILED', `target id ${JSON.stringify(t.id)} is given twice`)
      seen.add(t.id)
      const same = old.find((o) => o.id === t.id)
      if (same !== undefined && same.url !== t.url) {
        throw new SwitchyardError('VALIDATION_FAILED', `target id ${JSON.stringify(t.id)} is already used by ${same.url}; give the new target another id`)
      }
    }
    if (req.maxSurge === 0 && req.maxUnavailable === 0) {
      throw new SwitchyardError('VALIDATION_FAILED', 'maxSurge and maxUnavailable cannot both be 0: the replacement could never make a step')
    }
    const record: Replacement = {
      id: `r${randomBytes(3).toString('hex')}`,
      upstream,
      phase: 'running',
      step: 'starting',
      done: 0,
      total: 0,
      message: '',
      targets: req.targets.map(({ id, url }) => ({ id, url })),
      maxSurge: req.maxSurge,
      maxUnavailable: req.maxUnavailable,
      healthyTimeoutMs: req.healthyTimeoutMs,
      drainWaitMs: req.drainWaitMs,
      actor: req.actor,
      startedAt: new Date().toISOString(),
    }
    const lease = new LeaseKeeper({ store: this.control.store, name: leaseName(upstream), holder: `${this.control.instanceId} ${record.id}`, ttlMs: LEASE_TTL_MS, log: this.control.log })
    if (!(await lease.acquire())) {
      const other = await this.get(upstream)
      throw other?.phase === 'running' ? this.busy(other) : new SwitchyardError('CONFLICT', `a replacement of upstream ${JSON.stringify(upstream)} is running on another instance`)
    }
    let now: Target[]
    try {
      // Checked again under the lease: another instance's may have started since the checks above.
      if (this.records.get(upstream)?.phase === 'running') throw this.busy(this.records.get(upstream)!)
      // The steps are planned on the store's latest state: one that just ended elsewhere may not be applied here yet.
      await this.control.follower.sync().catch(() => {})
      now = upstreamOf(this.control.state, upstream).targets
    } catch (err) {
      await lease.stop()
      throw err
    }
    const toAdd = req.targets.filter((t) => !now.some((o) => o.id === t.id))
    const toRemove = now.filter((o) => !seen.has(o.id))
    record.total = toAdd.length + toRemove.length
    this.records.set(upstream, record)
    this.leases.set(record.id, lease)
    lease.start()
    const run = this.run(record, req, toAdd, toRemove, now.length)
      .then(() => this.end(record, 'succeeded', record.total === 0 ? 'the upstream already has exactly these targets' : `the upstream has exactly the ${req.targets.length} new target(s)`))
      .catch((err: unknown) => this.end(record, 'failed', err instanceof Error ? err.message : String(err)))
      .finally(async () => {
        this.leases.delete(record.id)
        this.running.delete(upstream)
        await lease.stop()
      })
    this.running.set(upstream, run)
    this.control.fleet.reportSoon()
    return { ...record }
  }

  private busy(r: Replacement): SwitchyardError {
    return new SwitchyardError('CONFLICT', `replacement ${r.id} of upstream ${JSON.stringify(r.upstream)} is running (${r.step})`)
  }

  /** Stops every replacement at its next step (the instance is closing); resolves once they have. */
  async stop(): Promise<void> {
    this.stopped = true
    await Promise.all(this.running.values())
  }

  private end(record: Replacement, phase: ReplacePhase, message: string): void {
    record.phase = phase
    record.message = message
    record.endedAt = new Date().toISOString()
    this.control.fleet.reportSoon()
  }

  private check(record: Replacement): void {
    if (this.stopped) throw new Error('stopped: this instance is shutting down (POST the same targets again to resume)')
    if (this.leases.get(record.id)?.held === false) throw new Error('stopped: this instance lost the lease on the upstream (store unreachable?); POST the same targets again to resume')
  }

  private async write(record: Replacement, what: string, req: ReplaceRequest, mutation: Parameters<ControlPlane['writer']['write']>[0]): Promise<number> {
    this.check(record)
    const suffix = req.reason === undefined ? '' : ` (${req.reason})`
    const { revision } = await this.control.writer.write(mutation, { actor: req.actor, reason: `replace ${record.id}: ${what}${suffix}` })
    return revision
  }

  /**
   * The loop: remove old targets while enough stay serving, add new ones while the count
   * stays within the surge, wait for the added ones to be healthy; again until none is left.
   * `serving` counts targets that take requests: kept and old ones, and new ones once healthy.
   */
  private async run(record: Replacement, req: ReplaceRequest, toAdd: Target[], toRemove: Target[], oldCount: number): Promise<void> {
    const { upstream } = record
    const wanted = req.targets.length
    const ceiling = Math.max(oldCount, wanted) + req.maxSurge
    const floor = Math.max(0, Math.min(oldCount, wanted) - req.maxUnavailable)
    let count = oldCount
    let serving = oldCount
    const adds = [...toAdd]
    const removes = [...toRemove]
    const step = (what: string) => {
      record.step = `${what} (${record.done + 1}/${record.total})`
      this.control.fleet.reportSoon()
      return record.step
    }
    while (adds.length > 0 || removes.length > 0) {
      let moved = false
      while (removes.length > 0 && (serving - 1 >= floor || adds.length === 0)) {
        const old = removes.shift()!
        const drainRevision = await this.write(record, step(`drain ${old.id}`), req, setTargetState(upstream, old.id, 'draining', 'target.drain'))
        const { drained, inflight } = await this.control.fleet.waitDrained(`${upstream}/${old.id}`, drainRevision, req.drainWaitMs)
        const note = drained ? '' : `, ${inflight} request(s) still in flight after ${req.drainWaitMs} ms`
        await this.write(record, step(`remove ${old.id}${note}`), req, removeTarget(upstream, old.id))
        record.done++
        this.control.fleet.reportSoon()
        count--
        serving--
        moved = true
      }
      const added: Target[] = []
      while (adds.length > 0 && count < ceiling) {
        const t = adds.shift()!
        await this.write(record, step(`add ${t.id}`), req, addTarget(upstream, { ...t, state: 'active' }))
        added.push(t)
        count++
        moved = true
      }
      for (const t of added) {
        record.step = `wait for ${t.id} to be healthy (${record.done + 1}/${record.total})`
        this.control.fleet.reportSoon()
        await this.untilHealthy(record, req, t)
        record.done++
        this.control.fleet.reportSoon()
        serving++
      }
      if (!moved) throw new Error('no step possible with these maxSurge and maxUnavailable')
    }
  }

  /** Waits until `t` is healthy; at the deadline removes it and throws, so the old targets keep serving. */
  private async untilHealthy(record: Replacement, req: ReplaceRequest, t: Target): Promise<void> {
    const { upstream } = record
    const checked = upstreamOf(this.control.state, upstream).healthCheck !== undefined
    const deadline = Date.now() + req.healthyTimeoutMs
    let why = 'not applied on this instance yet'
    for (;;) {
      this.check(record)
      const h = this.healthOf(upstream, t.id)
      if (h !== undefined) {
        // With a health check: its verdict on this instance. Without: a TCP connect that succeeds.
        if (checked) {
          if (h.healthy) return
          why = h.reason ?? 'health check failing'
        } else {
          const error = await connects(t.url)
          if (error === undefined && h.healthy) return
          why = error ?? h.reason ?? 'not healthy'
        }
      }
      if (Date.now() >= deadline) break
      await new Promise((r) => setTimeout(r, Math.min(POLL_MS, Math.max(1, deadline - Date.now()))))
    }
    const message = `new target ${t.id} did not become healthy within ${req.healthyTimeoutMs} ms (${why}); it was removed, the old targets still serve`
    await this.write(record, `remove ${t.id}: not healthy within ${req.healthyTimeoutMs} ms`, req, removeTarget(upstream, t.id))
    throw new Error(message)
  }
}

/** `undefined` once a TCP connection to `url`'s host and port opens, else why not. */
function connects(url: string): Promise<string | undefined> {
  const u = new URL(url)
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80))
  const host = u.hostname.replace(/^\[|\]$/g, '')
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: CONNECT_TIMEOUT_MS })
    socket.once('connect', () => {
      socket.destroy()
      resolve(undefined)
    })
    socket.once('timeout', () => {
      socket.destroy()
      resolve('connect timed out')
    })
    socket.once('error', (err) => resolve(`connect failed: ${err.message}`))
  })
}
