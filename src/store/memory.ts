/**
 * The in-process store: one process holds the state (`store: {type: memory}`).
 *
 * It follows the same contract, and the same layout, as the Redis store so the control plane
 * has one code path and one contract suite judges both alike: the state is kept as JSON text
 * per resource (a loaded state is a fresh copy, exactly what Redis gives), a change log names
 * what each of the last CHANGELOG_CAP revisions changed (`changesSince` decodes only those
 * resources), commits compare-and-set on the revision, and listeners hear of changes
 * asynchronously (queueMicrotask), like a pub/sub message, never inside the caller's `commit()`.
 */
import assert from 'node:assert/strict'
import type { State } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { stateDigest } from '../state/digest.js'
import { RESOURCE_KINDS, type Delta, type ResourceKind, type Touched } from '../state/delta.js'
import { CHANGELOG_CAP, EVENTS_CAP } from './keys.js'
import { allResources, decodeDelta, decodeState, normalizeTouched, parseStored, routeNames, touchedResources, type Writes } from './resources.js'
import type { TelemetrySample } from '../telemetry/types.js'
import type { AuditEvent, CommitResult, InstanceInfo, Store, StoreHead } from './store.js'

export interface MemoryBackingOptions {
  /** How many revisions the change log covers; default CHANGELOG_CAP (tests lower it). */
  changelogCap?: number
}

/** One change log entry: what a revision changed, or null for a whole-state write. */
interface ChangelogEntry {
  revision: number
  touched: Touched | null
}

/**
 * The data several `MemoryStore` handles can share, like several clients of one Redis:
 * tests and in-process fleets attach two handles to one backing to see each other's
 * changes. A plain `new MemoryStore()` gets a backing of its own.
 */
export class MemoryBacking {
  revision: number | null = null
  /** the digest of the state at `revision` (state/digest.ts) */
  digest: string | null = null
  /** name → JSON per resource kind, like the Redis hashes */
  readonly resources: Record<ResourceKind, Map<string, string>> = { upstreams: new Map(), routes: new Map(), flags: new Map(), rollouts: new Map() }
  /** route names in match order */
  routeOrder: string[] = []
  /** newest first, at most `changelogCap` */
  readonly changelog: ChangelogEntry[] = []
  readonly changelogCap: number
  /** JSON events, newest first, at most EVENTS_CAP. */
  readonly events: string[] = []
  readonly instances = new Map<string, { json: string; expiresAt: number }>()
  readonly leases = new Map<string, { holder: string; expiresAt: number }>()
  /** instance → its samples as JSON with their `at`, oldest first, and when it is forgotten */
  readonly telemetry = new Map<string, { samples: { at: number; json: string }[]; expiresAt: number }>()
  readonly stores = new Set<MemoryStore>()

  constructor(options: MemoryBackingOptions = {}) {
    this.changelogCap = options.changelogCap ?? CHANGELOG_CAP
  }

  /**
   * The whole state as one JSON document (what `load()` parses), or null while empty.
   * Assigning replaces the state behind the stores' back, with no notice: null empties it
   * (a Redis restarted empty), a document is a whole-state write at its revision.
   */
  get stateJson(): string | null {
    const state = this.decode()
    return state === null ? null : JSON.stringify(state)
  }

  set stateJson(json: string | null) {
    if (json === null) {
      this.revision = null
      this.digest = null
      for (const kind of RESOURCE_KINDS) this.resources[kind].clear()
      this.routeOrder = []
      this.changelog.length = 0
    } else {
      const state = parseStored<State>(json, 'state')
      this.replaceAll(state, stateDigest(state))
    }
  }

  /** The state, decoded afresh. */
  decode(): State | null {
    if (this.revision === null) return null
    return decodeState(this.revision, this.routeOrder, this.resources)
  }

  /** A whole-state write: every resource replaced, logged as such. */
  replaceAll(state: State, digest: string): void {
    this.digest = digest
    for (const kind of RESOURCE_KINDS) this.resources[kind].clear()
    this.write(allResources(state))
    this.routeOrder = routeNames(state)
    this.revision = state.revision
    this.log(state.revision, null)
  }

  /** Writes the touched resources of `next`; `touched` is normalized. */
  applyChange(next: State, touched: Touched, digest: string): void {
    this.digest = digest
    const writes = touchedResources(next, touched)
    // Like the Redis script: a route that comes or goes changes the order, whatever the caller said.
    const routes = this.resources.routes
    if (!touched.order && writes.routes.some(([name, json]) => routes.has(name) === (json === null))) touched.order = true
    this.write(writes)
    if (touched.order) this.routeOrder = routeNames(next)
    this.revision = next.revision
    this.log(next.revision, touched)
  }

  /** What changed after `revision`, or null when the log cannot tell (see Store.changesSince). */
  changesSince(revision: number): Delta | null {
    const current = this.revision
    if (current === null || !Number.isInteger(revision) || revision > current) return null
    const n = current - revision
    if (n > this.changelog.length) return null
    const names: Record<ResourceKind, Set<string>> = { upstreams: new Set(), routes: new Set(), flags: new Set(), rollouts: new Set() }
    let order = false
    for (let i = 0; i < n; i++) {
      const entry = this.changelog[i]!
      if (entry.revision !== current - i || entry.touched === null) return null
      for (const kind of RESOURCE_KINDS) for (const name of entry.touched[kind]) names[kind].add(name)
      if (entry.touched.order) order = true
    }
    const changed = (kind: ResourceKind): Array<[string, string | null]> => [...names[kind]].map((name) => [name, this.resources[kind].get(name) ?? null])
    const delta = decodeDelta(current, order ? this.routeOrder.slice() : undefined, {
      upstreams: changed('upstreams'),
      routes: changed('routes'),
      flags: changed('flags'),
      rollouts: changed('rollouts'),
    })
    if (this.digest !== null) delta.digest = this.digest
    return delta
  }

  /** Tells every attached, open handle (the writer included, as Redis pub/sub does). */
  publish(revision: number): void {
    for (const store of this.stores) queueMicrotask(() => store.notifyChange(revision))
  }

  private write(writes: Writes): void {
    for (const kind of RESOURCE_KINDS) {
      const map = this.resources[kind]
      for (const [name, json] of writes[kind]) {
        if (json === null) map.delete(name)
        else map.set(name, json)
      }
    }
  }

  private log(revision: number, touched: Touched | null): void {
    this.changelog.unshift({ revision, touched })
    if (this.changelog.length > this.changelogCap) this.changelog.length = this.changelogCap
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
    return this.backing.decode()
  }

  async revision(): Promise<number | null> {
    this.ensureOpen()
    return this.backing.revision
  }

  async head(): Promise<StoreHead | null> {
    this.ensureOpen()
    const b = this.backing
    return b.revision === null ? null : { revision: b.revision, digest: b.digest }
  }

  async commit(next: State, event: AuditEvent, expected: number, touched?: Touched | null, digest?: string): Promise<CommitResult> {
    this.ensureOpen()
    assert.equal(next.revision, expected + 1, 'commit: next.revision must be expected + 1')
    const b = this.backing
    // Same rules as the Redis commit script: an empty store accepts only a first write.
    if (b.revision === null) {
      if (expected !== 0) return { ok: false, reason: 'empty' }
    } else if (b.revision !== expected) {
      return { ok: false, reason: 'revision-mismatch', currentRevision: b.revision }
    }
    // A first write (expected 0) is whole, like one without touched names: there is nothing to change.
    const d = digest ?? stateDigest(next)
    if (touched === undefined || touched === null || expected === 0) b.replaceAll(next, d)
    else b.applyChange(next, normalizeTouched(touched), d)
    b.events.unshift(JSON.stringify(event))
    if (b.events.length > EVENTS_CAP) b.events.length = EVENTS_CAP
    b.publish(next.revision)
    return { ok: true, revision: next.revision }
  }

  async seed(state: State, digest?: string): Promise<boolean> {
    this.ensureOpen()
    const b = this.backing
    if (b.revision !== null && b.revision >= state.revision) return false
    b.replaceAll(state, digest ?? stateDigest(state))
    b.publish(state.revision)
    return true
  }

  async changesSince(revision: number): Promise<Delta | null> {
    this.ensureOpen()
    return this.backing.changesSince(revision)
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

  async pushTelemetry(sample: TelemetrySample, retainMs: number): Promise<void> {
    this.ensureOpen()
    const now = Date.now()
    const entry = this.backing.telemetry.get(sample.instance) ?? { samples: [], expiresAt: 0 }
    entry.samples.push({ at: sample.at, json: JSON.stringify(sample) })
    entry.samples = entry.samples.filter((x) => x.at > now - retainMs)
    entry.expiresAt = now + retainMs
    this.backing.telemetry.set(sample.instance, entry)
  }

  async telemetry(sinceMs: number): Promise<TelemetrySample[]> {
    this.ensureOpen()
    const now = Date.now()
    const out: TelemetrySample[] = []
    for (const [id, entry] of this.backing.telemetry) {
      if (entry.expiresAt <= now) this.backing.telemetry.delete(id)
      else for (const x of entry.samples) if (x.at > sinceMs) out.push(JSON.parse(x.json) as TelemetrySample)
    }
    return out
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
