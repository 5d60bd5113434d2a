/**
 * The control plane of one proxy instance: it holds the applied state, follows the store
 * (pub/sub notices plus a periodic re-read, so a missed message heals), compiles and swaps the
 * data plane's table, performs revisioned writes, and registers the instance in the fleet.
 */
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { State } from '../config/schema.js'
import { validateState } from '../config/validate.js'
import type { Dataplane } from '../dataplane/server.js'
import { compileTable } from '../dataplane/table.js'
import { SwitchyardError } from '../errors.js'
import type { AuditEvent, InstanceInfo, Store } from '../store/store.js'

export interface WriteOptions {
  /** If-Match: the write applies only at this revision (412 otherwise) */
  ifMatch?: number | undefined
  actor: string
  reason?: string | null | undefined
}

/** What a mutation did, for the audit log and the answer. */
export interface Change<T = unknown> {
  action: string
  target: string
  before: unknown
  after: unknown
  /** what the admin API answers besides `revision` */
  result: T
}

export type Mutation<T> = (draft: State) => Change<T>

export interface ControlPlaneOptions {
  store: Store
  dataplane: Dataplane
  /** The config file's state; seeds an empty store. */
  seed: State
  /** Interval of the periodic re-read of the store's revision (SPEC §7 self-healing). */
  resyncMs?: number
  /** Registry heartbeat and TTL. */
  heartbeatMs?: number
  instanceTtlMs?: number
  /** Called after every table swap (health checker, metrics). */
  onApplied?: (state: State) => void
}

const MAX_WRITE_ATTEMPTS = 8

export class ControlPlane {
  readonly instanceId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`
  private applied: State
  private ready = false
  private timers: NodeJS.Timeout[] = []
  private syncing: Promise<void> | null = null
  private resyncAgain = false
  private closed = false
  /** targets from the config file start healthy; those added later wait for their first check */
  private readonly seedTargets: Set<string>

  constructor(private readonly opts: ControlPlaneOptions) {
    this.applied = opts.seed
    this.seedTargets = new Set(
      Object.entries(opts.seed.upstreams).flatMap(([u, up]) => up.targets.map((t) => `${u}/${t.id}`)),
    )
  }

  get store(): Store {
    return this.opts.store
  }

  /** The state this instance applied (SPEC §8: `GET /api/state` shows this copy). */
  get state(): State {
    return this.applied
  }

  get isReady(): boolean {
    return this.ready
  }

  async start(): Promise<void> {
    const { store } = this.opts
    store.onChange(() => void this.sync())
    store.onConnectionChange((up) => {
      if (up) void this.sync()
    })
    await store.open()
    let state = await store.load()
    if (state === null) {
      await store.seed(this.opts.seed)
      state = (await store.load()) ?? this.opts.seed
    }
    this.apply(state)
    this.ready = true
    await this.heartbeat()
    const every = (ms: number, fn: () => Promise<void>) => {
      const t = setInterval(() => void fn().catch(() => {}), ms)
      t.unref()
      this.timers.push(t)
    }
    every(this.opts.resyncMs ?? 1_000, () => this.sync())
    every(this.opts.heartbeatMs ?? 1_000, () => this.heartbeat())
  }

  /** Compiles and swaps in `state` if it is newer than the applied one. */
  private apply(state: State): void {
    if (this.ready && state.revision <= this.applied.revision) return
    const table = compileTable(state, this.opts.dataplane.resources, {
      initiallyHealthy: (u, id) => this.seedTargets.has(`${u}/${id}`) || state.upstreams[u]?.healthCheck === undefined,
    })
    this.opts.dataplane.setTable(table)
    this.applied = state
    this.opts.onApplied?.(state)
    // Tell the fleet at once, so `waitApplied` answers within milliseconds, not a heartbeat.
    if (this.ready) void this.heartbeat().catch(() => {})
  }

  /**
   * Brings the applied state up to the store's. Coalesces concurrent calls. An empty store
   * (Redis restarted with nothing) is re-seeded with this instance's state; the store keeps
   * whichever revision is highest across the fleet.
   */
  sync(): Promise<void> {
    if (this.syncing) {
      this.resyncAgain = true
      return this.syncing
    }
    this.syncing = (async () => {
      try {
        do {
          this.resyncAgain = false
          if (this.closed || !this.opts.store.connected) return
          // The common case of the periodic re-read: nothing changed; skip fetching the document.
          if ((await this.opts.store.revision()) === this.applied.revision) continue
          let state = await this.opts.store.load()
          if (state === null || state.revision < this.applied.revision) {
            await this.opts.store.seed(this.applied)
            state = await this.opts.store.load()
          }
          if (state !== null && state.revision > this.applied.revision) this.apply(state)
        } while (this.resyncAgain)
      } catch {
        // Store unreachable: keep proxying on the last state; the next tick or reconnect retries.
      } finally {
        this.syncing = null
      }
    })()
    return this.syncing
  }

  /**
   * A revisioned write: reads the store's current state, applies `mutation` to a copy,
   * validates the result, and commits it with compare-and-set. Without If-Match a concurrent
   * writer makes it re-read and re-apply (optimistic concurrency); with If-Match it gets 412.
   */
  async write<T>(mutation: Mutation<T>, opts: WriteOptions): Promise<{ revision: number; change: Change<T> }> {
    const { store } = this.opts
    if (!store.connected) throw new SwitchyardError('STORE_UNAVAILABLE')
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      let current = await store.load()
      if (current === null || current.revision < this.applied.revision) {
        // Never start from an empty (or older) store while this instance holds a state (SPEC §8).
        await store.seed(this.applied)
        current = await store.load()
        if (current === null) throw new SwitchyardError('STORE_UNAVAILABLE', 'the store could not be seeded')
      }
      if (opts.ifMatch !== undefined && opts.ifMatch !== current.revision) {
        throw new SwitchyardError('REVISION_MISMATCH', `If-Match is ${opts.ifMatch}, the current revision is ${current.revision}`)
      }
      const draft = structuredClone(current)
      const change = mutation(draft)
      const problems = validateState(draft)
      if (problems.length > 0) {
        throw new SwitchyardError('VALIDATION_FAILED', problems.map((p) => `${p.path}: ${p.message}`).join('; '), {
          details: problems,
        })
      }
      // validateState is the one semantic check: a state that passes it compiles (the compile in
      // apply() has side effects on live target runtimes, so it must not run for a draft).
      draft.revision = current.revision + 1
      const event: AuditEvent = {
        revision: draft.revision,
        at: new Date().toISOString(),
        actor: opts.actor,
        reason: opts.reason ?? null,
        action: change.action,
        target: change.target,
        before: change.before,
        after: change.after,
      }
      const result = await store.commit(draft, event, current.revision)
      if (result.ok) {
        this.apply(draft)
        return { revision: draft.revision, change }
      }
      if (result.reason === 'revision-mismatch' && opts.ifMatch !== undefined) {
        throw new SwitchyardError('REVISION_MISMATCH', `the revision moved to ${result.currentRevision}`)
      }
      // Lost a race (or the store emptied under us): read again and retry.
    }
    throw new SwitchyardError('CONFLICT', 'too many concurrent writes; try again')
  }

  /** In-flight requests per `upstream/target` in this process. */
  inflight(): Record<string, number> {
    const out: Record<string, number> = {}
    for (const [key, rt] of this.opts.dataplane.resources.targets) out[key] = rt.inflight
    return out
  }

  private async heartbeat(): Promise<void> {
    if (this.closed || !this.opts.store.connected) return
    const info: Omit<InstanceInfo, 'lastSeen'> = {
      id: this.instanceId,
      host: hostname(),
      pid: process.pid,
      appliedRevision: this.applied.revision,
      inflight: this.inflight(),
    }
    await this.opts.store.register(info, this.opts.instanceTtlMs ?? 5_000).catch(() => {})
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
      await new Promise((r) => setTimeout(r, Math.min(5, Math.max(0, deadline - Date.now()))))
    }
  }

  async close(): Promise<void> {
    this.closed = true
    for (const t of this.timers) clearInterval(t)
    this.timers = []
    await this.opts.store.unregister(this.instanceId).catch(() => {})
  }
}
