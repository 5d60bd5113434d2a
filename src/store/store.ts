/**
 * The state store: where the revisioned state lives and how a fleet hears of changes.
 * `memory` serves one process; `redis` shares one state among many proxy instances.
 * The control plane never talks to Redis except through this interface.
 */
import type { State } from '../config/schema.js'
import type { TelemetrySample } from '../telemetry/types.js'
import type { Delta, Touched } from '../state/delta.js'

export type { Delta, Touched } from '../state/delta.js'

/** One audit-log entry (`GET /api/events`). */
export interface AuditEvent {
  revision: number
  at: string // ISO 8601
  actor: string // token name, `token`, `anonymous`, `config`, `rollout:<id>` ...
  reason: string | null // X-Switchyard-Reason
  action: string // e.g. `split.put`, `target.add`
  target: string // e.g. `routes/api/split`
  before: unknown
  after: unknown
}

/** What an instance publishes about itself (the instance registry). */
export interface InstanceInfo {
  id: string
  host: string
  pid: number
  appliedRevision: number
  /** the digest of its applied state (state/digest.ts); absent from instances of older versions */
  digest?: string
  /** how long its applied revision has been behind the store's, in ms, by its own account (0: not behind) */
  behindMs?: number
  lastSeen: string // ISO 8601, set by the store on register
  /** in-flight requests per `upstream/targetId` */
  inflight: Record<string, number>
  /** the rolling replacements this instance drives or drove last, one per upstream (src/control/replace.ts) */
  replacements?: unknown[]
}

/** The store's revision and the digest of the state it holds (state/digest.ts); null digest: written by an older version. */
export interface StoreHead {
  revision: number
  digest: string | null
}

export type CommitResult =
  | { ok: true; revision: number }
  | { ok: false; reason: 'revision-mismatch'; currentRevision: number }
  | { ok: false; reason: 'empty' } // store holds no state: the caller must re-seed first

export interface Store {
  readonly kind: 'memory' | 'redis'
  /** Connects (and for redis subscribes). Resolves once usable; may reject if unreachable at start. */
  open(): Promise<void>
  /** True while the store is reachable; `store_connected` reports it. */
  readonly connected: boolean
  /** The current state, or null when the store holds none. Throws STORE_UNAVAILABLE when unreachable. */
  load(): Promise<State | null>
  /** The current revision alone (cheap), or null when empty: the periodic re-read checks this first. */
  revision(): Promise<number | null>
  /** The revision with the stored state's digest, read together (the periodic check compares both), or null when empty. */
  head(): Promise<StoreHead | null>
  /**
   * Atomically replaces the state with `next` (whose revision must be `expected + 1`) iff the
   * store's revision is `expected`, appends `event` to the audit log, and notifies every
   * subscriber. Throws STORE_UNAVAILABLE when unreachable.
   *
   * `touched` names what `next` changed from the state at `expected`: the store then writes
   * and announces only those resources (a touched name `next` lacks is deleted), and
   * followers fetch only them (`changesSince`). Resources it does not name must equal the
   * stored ones. A route that comes or goes changes the stored route order even when
   * `touched.order` is false. Without `touched`, and for a first write (`expected` 0), the
   * whole state is replaced, and followers reload it whole.
   *
   * `digest` is `next`'s (state/digest.ts), stored beside its revision; the writer computes it
   * from the change alone. Without it the store computes it from the whole of `next`.
   */
  commit(next: State, event: AuditEvent, expected: number, touched?: Touched, digest?: string): Promise<CommitResult>
  /**
   * The changes from the state at `revision` to the store's current one, read in one
   * consistent snapshot: applying them (`applyDelta`) to the state at `revision` gives the
   * current state. An empty delta when `revision` is current. Null when the store cannot tell:
   * it is empty, holds a lower revision, the gap is longer than its change log, or a
   * whole-state write (seed, commit without `touched`) lies in between; then `load()` it whole.
   * The delta's `digest` is the store's at `delta.revision` (absent when it holds none), read in
   * the same snapshot: a follower checks that the state it makes has that digest.
   * Throws STORE_UNAVAILABLE when unreachable.
   */
  changesSince(revision: number): Promise<Delta | null>
  /**
   * Writes `state` iff the store is empty or holds a lower revision (the highest revision
   * wins, never an older one). Returns true when it wrote.
   */
  seed(state: State, digest?: string): Promise<boolean>
  /**
   * Called with the new revision after any commit by any instance, and after a reconnect
   * (revision -1). A store may pass the commit's change along (`delta`, small changes only):
   * applying it to the state at `revision - 1` gives the state at `revision`, so a listener
   * at `revision - 1` needs no `changesSince`. Any other listener (further behind, or given
   * no delta) asks `changesSince`. Notices may be lost, repeated or out of order, so a
   * listener must never go back nor skip a revision. The delta is shared: never mutate it.
   */
  onChange(listener: (revision: number, delta?: Delta) => void): void
  /** Called whenever `connected` changes. */
  onConnectionChange(listener: (connected: boolean) => void): void
  /** Newest first. */
  events(limit: number): Promise<AuditEvent[]>
  /** Registers or refreshes this instance with a TTL. */
  register(info: Omit<InstanceInfo, 'lastSeen'>, ttlMs: number): Promise<void>
  unregister(id: string): Promise<void>
  /** The live instances (registered within their TTL). */
  instances(): Promise<InstanceInfo[]>
  /**
   * Acquires or renews the lease `name` for `holder` for `ttlMs`: true when `holder` holds it
   * now (it was free, expired, or already `holder`'s), false when someone else does. Expiry is
   * judged by the store's clock alone, so holders on different hosts need no synchronised
   * clocks. A holder that stops renewing loses the lease after `ttlMs`.
   */
  lease(name: string, holder: string, ttlMs: number): Promise<boolean>
  /** Gives the lease up at once if `holder` holds it; true when it did. */
  releaseLease(name: string, holder: string): Promise<boolean>
  /** Who holds the lease now, or null when nobody does. */
  leaseHolder(name: string): Promise<string | null>
  /**
   * Keeps one instance's traffic figures for one period (fleet telemetry) for `retainMs`:
   * samples older than that are dropped, and an instance that stops pushing is forgotten
   * after it. Not revisioned, not audited, not announced.
   */
  pushTelemetry(sample: TelemetrySample, retainMs: number): Promise<void>
  /** Every kept sample whose `at` is after `sinceMs` (epoch ms), of every instance, in no particular order. */
  telemetry(sinceMs: number): Promise<TelemetrySample[]>
  close(): Promise<void>
}
