/**
 * The in-process store: one process holds the state (`store: {type: memory}`).
 *
 * It follows the same contract as the Redis store so the control plane has one code path
 * and one contract suite covers both: states are kept as JSON text (a loaded state is a
 * fresh copy, exactly what a JSON round trip through Redis gives), commits compare-and-set
 * on the revision, and listeners hear of changes asynchronously (queueMicrotask), like a
 * pub/sub message, never inside the caller's `commit()`.
 */
import assert from 'node:assert/strict'
import type { State } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { EVENTS_CAP } from './keys.js'
import type { AuditEvent, CommitResult, InstanceInfo, Store } from './store.js'

/**
 * The data several `MemoryStore` handles can share, like several clients of one Redis:
 * tests and in-process fleets attach two handles to one backing to see each other's
 * changes. A plain `new MemoryStore()` gets a backing of its own.
 */
export class MemoryBacking {
  /** JSON of the state, or null while empty. */
  stateJson: string | null = null
  revision: number | null = null
  /** JSON events, newest first, at most EVENTS_CAP. */
  readonly events: string[] = []
  readonly instances = new Map<string, { json: string; expiresAt: number }>()
  readonly leases = new Map<string, { holder: string; expiresAt: number }>()
  readonly stores = new Set<MemoryStore>()

  /** Tells every attached, open handle (the writer included, as Redis pub/sub does). */
  publish(revision: number): void {
    for (const store of this.stores) queueMicrotask(() => store.notifyChange(revision))
  }
}

export class MemoryStore implements Store {
  readonly kind = 'memory' as const
  private readonly backing: MemoryBacking
  private readonly changeListeners = new Set<(revision: number) => void>()
  private readonly connectionListeners = new Set<(connected: boolean) => void>()
  private closed = false

  constructor(backing: MemoryBacking = new MemoryBacking()) {
    this.backing = backing
    backing.stores.add(this)
  }

  /** Always true until `close()`: there is nothing to lose a connection to. */
  get connected(): boolean {
    return !this.closed
  }

  async open(): Promise<void> {
    this.ensureOpen()
  }

  async load(): Promise<State | null> {
    this.ensureOpen()
    const json = this.backing.stateJson
    return json === null ? null : (JSON.parse(json) as State)
  }

  async revision(): Promise<number | null> {
    this.ensureOpen()
    return this.backing.revision
  }

  async commit(next: State, event: AuditEvent, expected: number): Promise<CommitResult> {
    this.ensureOpen()
    assert.equal(next.revision, expected + 1, 'commit: next.revision must be expected + 1')
    const b = this.backing
    // Same rules as the Redis commit script: an empty store accepts only a first write.
    if (b.revision === null) {
      if (expected !== 0) return { ok: false, reason: 'empty' }
    } else if (b.revision !== expected) {
      return { ok: false, reason: 'revision-mismatch', currentRevision: b.revision }
    }
    b.stateJson = JSON.stringify(next)
    b.revision = next.revision
    b.events.unshift(JSON.stringify(event))
    if (b.events.length > EVENTS_CAP) b.events.length = EVENTS_CAP
    b.publish(next.revision)
    return { ok: true, revision: next.revision }
  }

  async seed(state: State): Promise<boolean> {
    this.ensureOpen()
    const b = this.backing
    if (b.revision !== null && b.revision >= state.revision) return false
    b.stateJson = JSON.stringify(state)
    b.revision = state.revision
    b.publish(state.revision)
    return true
  }

  // TEMPORARY (replaced by the stores branch)
  async changesSince(_revision: number): Promise<import('./delta.js').Delta | null> {
    return null
  }

  onChange(listener: (revision: number) => void): void {
    this.changeListeners.add(listener)
  }

  /** Never called before close: the memory store does not disconnect. */
  onConnectionChange(listener: (connected: boolean) => void): void {
    this.connectionListeners.add(listener)
  }

  async events(limit: number): Promise<AuditEvent[]> {
    this.ensureOpen()
    const n = Math.max(0, Math.floor(limit))
    return this.backing.events.slice(0, n).map((json) => JSON.parse(json) as AuditEvent)
  }

  async register(info: Omit<InstanceInfo, 'lastSeen'>, ttlMs: number): Promise<void> {
    this.ensureOpen()
    const full: InstanceInfo = { ...info, lastSeen: new Date().toISOString() }
    this.backing.instances.set(info.id, { json: JSON.stringify(full), expiresAt: Date.now() + ttlMs })
  }

  async unregister(id: string): Promise<void> {
    this.ensureOpen()
    this.backing.instances.delete(id)
  }

  async instances(): Promise<InstanceInfo[]> {
    this.ensureOpen()
    const now = Date.now()
    const live: InstanceInfo[] = []
    // Expiry is judged lazily by timestamp, so no timer keeps the process alive.
    for (const [id, entry] of this.backing.instances) {
      if (entry.expiresAt <= now) this.backing.instances.delete(id)
      else live.push(JSON.parse(entry.json) as InstanceInfo)
    }
    return live.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }

  async lease(name: string, holder: string, ttlMs: number): Promise<boolean> {
    this.ensureOpen()
    const current = this.liveLease(name)
    if (current !== undefined && current.holder !== holder) return false
    this.backing.leases.set(name, { holder, expiresAt: Date.now() + Math.max(1, Math.ceil(ttlMs)) })
    return true
  }

  async releaseLease(name: string, holder: string): Promise<boolean> {
    this.ensureOpen()
    if (this.liveLease(name)?.holder !== holder) return false
    this.backing.leases.delete(name)
    return true
  }

  async leaseHolder(name: string): Promise<string | null> {
    this.ensureOpen()
    return this.liveLease(name)?.holder ?? null
  }

  /** Expiry judged lazily by timestamp, like instances: no timer. */
  private liveLease(name: string): { holder: string; expiresAt: number } | undefined {
    const lease = this.backing.leases.get(name)
    if (lease !== undefined && lease.expiresAt <= Date.now()) {
      this.backing.leases.delete(name)
      return undefined
    }
    return lease
  }

  async close(): Promise<void> {
    this.closed = true
    this.backing.stores.delete(this)
    this.changeListeners.clear()
    this.connectionListeners.clear()
  }

  /** @internal called by the backing, one microtask after a write. */
  notifyChange(revision: number): void {
    if (this.closed) return
    for (const listener of this.changeListeners) {
      try {
        listener(revision)
      } catch (err) {
        // One faulty listener must not keep the others from hearing of the change.
        process.emitWarning(`switchyard store listener threw: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
  }

  private ensureOpen(): void {
    if (this.closed) throw new SwitchyardError('STORE_UNAVAILABLE', 'the memory store is closed')
  }
}
