/**
 * The follower: keeps this instance's applied state equal to the store's, and swaps the data
 * plane's table whenever it moves. It hears of changes three ways, so that none can be lost
 * for long: the store's change notices (pub/sub), its reconnects, and a periodic re-read of
 * the store's revision.
 *
 * Divergence is never silent. The periodic check runs apart from the sync it triggers, so a
 * wedged or failing sync still shows: an instance whose applied revision stays behind the
 * store's for more than `behindAlertMs` logs it, `behindMs()` feeds the
 * `switchyard_state_behind_seconds` gauge and the instance registry, and a state that fails
 * to compile is logged and counted (`applyFailures`), never swallowed.
 *
 * Nothing read from the store is applied unchecked: a whole state, a change fetched with
 * `changesSince` and a change sent along with a notice pass the checks an admin write passes
 * (stored-state.ts), and the `tls.ca` files they name are read ahead, asynchronously, before
 * the compile. One that fails is a state that cannot be applied, as above: the last good
 * state stays in force. Own writes (`offer`) were checked by the writer.
 */
import type { RouteSpec, State, Upstream } from '../config/schema.js'
import type { Dataplane } from '../dataplane/server.js'
import { formatPath } from '../config/shape.js'
import { CaFiles, pemPaths } from '../config/tls-files.js'
import { compileTableSliced, updateTable, type CompileOptions, type RoutingTable } from '../dataplane/table.js'
import { SwitchyardError, type Problem } from '../errors.js'
import type { Logger } from '../log.js'
import { applyDelta, indexRoutes, touchedOf } from '../state/delta.js'
import type { Delta, Store, Touched } from '../store/store.js'
import { digestAfter, stateDigest, stateDigestSliced, type Digest } from '../state/digest.js'
import { effectiveState, isProvided, type TargetProvider } from './providers/provider.js'
import { describeProblems, storedChangeProblems, storedStateProblems } from './stored-state.js'

export interface FollowerOptions {
  store: Store
  dataplane: Dataplane
  /** The config file's state: seeds an empty store; its targets start healthy. */
  seed: State
  log: Logger
  /** Interval of the periodic revision check (the self-healing re-read). Default 1 s. */
  resyncMs?: number
  /** How long the applied revision may stay behind the store's before it is reported. Default 5 s. */
  behindAlertMs?: number
  /**
   * How long a starting instance that finds the store empty waits for a running fleet to
   * re-seed it (a Redis restarted empty) before seeding it from the config file. Default 2 s;
   * 0 seeds at once (a single instance, or a store no fleet shares).
   */
  seedWaitMs?: number
}

const RESYNC_MS = 1_000
/** Over a running fleet's re-seed after a Redis restart: its reconnect re-seeds at once, its periodic check within RESYNC_MS. */
const SEED_WAIT_MS = 2_000
/** While waiting for a fleet's re-seed, the store is read again at least this often (a notice may be missed). */
const SEED_POLL_MS = 100
const BEHIND_ALERT_MS = 5_000
/** While still behind, the warning is repeated this often. */
const BEHIND_REPEAT_MS = 60_000
/** Revisions remembered with the time they were first seen, to judge other instances' lag. */
const SEEN_CAP = 256
/** A change naming more resources than this is compiled whole, in slices, rather than one by one. */
const INCREMENTAL_MAX = 256

export class Follower {
  private applied: State
  /** the digest of `applied` (state/digest.ts): two states under one revision differ by it */
  private appliedDigest: Digest
  /** `revision:digest` of the last store state healed to at this instance's own revision: heal once, never loop */
  private healedAt = ''
  private divergedCount = 0
  /** `applied` plus the providers' targets: what the table was compiled from */
  private compiled: State
  private readonly providers: TargetProvider[] = []
  /** the table compiled from `compiled`, in force in the data plane */
  private table: RoutingTable | null = null
  /** a whole compile (sliced, across event-loop turns) is running: nothing else may apply meanwhile */
  private compiling = false
  private refreshPending = false
  private ready = false
  private closed = false
  private timer: NodeJS.Timeout | undefined
  /**
   * Single flight: `running` is the only guard. (A promise used as the guard once wedged this:
   * a flight that ended before its first await cleared the guard before it was even stored.)
   */
  private running = false
  private again = false
  private flight: Promise<void> = Promise.resolve()
  /** the store's revision as last observed (notice or read); 0 until known */
  private storeRevision = 0
  private storeRevisionSeenAt = 0
  private behindSince: number | null = null
  private lastWarning = 0
  private readonly firstSeen: { revision: number; at: number }[] = []
  private failedRevision = -1
  /** the last revision refused because its content fails validation */
  private invalidRevision = -1
  private failures = 0
  private alerts = 0
  private readonly listeners = new Set<(state: State) => void>()
  /** targets from the config file start healthy; those added later wait for their first check */
  private readonly seedTargets: Set<string>
  /** the `tls.ca` files of what is compiled next, read ahead (the compile reads no file) */
  private readonly ca = new CaFiles()
  /** set while start() waits for a fleet to re-seed an empty store: a change notice ends the wait early */
  private wake: (() => void) | undefined

  constructor(private readonly opts: FollowerOptions) {
    this.applied = opts.seed
    this.appliedDigest = stateDigest(opts.seed)
    this.compiled = opts.seed
    this.seedTargets = new Set(
      Object.entries(opts.seed.upstreams).flatMap(([u, up]) => up.targets.map((t) => `${u}/${t.id}`)),
    )
  }

  /** The state this instance applied: what its data plane routes by. */
  get state(): State {
    return this.applied
  }

  /**
   * The state the data plane's table was compiled from: the applied state plus the targets of
   * providers (DNS discovery), which carry a `source`. Same revision as `state`; applied-state
   * listeners receive this one, so health checks and metrics cover discovered targets too.
   */
  get effective(): State {
    return this.compiled
  }

  /** Adds a source of targets besides the store; read at every compile from then on. */
  use(provider: TargetProvider): void {
    this.providers.push(provider)
  }

  /**
   * Recompiles the applied state with the providers' current targets and swaps the table: how
   * a provider's change takes effect. No revision changes and nothing is written to the store.
   * False when it could not compile (logged) or the follower is not running.
   */
  refresh(): boolean {
    if (!this.ready || this.closed) return false
    if (this.compiling) {
      this.refreshPending = true
      return true
    }
    return this.applyChange(this.applied, { upstreams: [], routes: [], flags: [], rollouts: [], order: false }, 'refresh')
  }

  /** The digest of the applied state: `GET /api/instances` shows it beside the applied revision. */
  get digest(): Digest {
    return this.appliedDigest
  }

  /**
   * Times this instance found the store holding another state than its own at its revision
   * (another digest), or a lower revision than it applied: each was logged and reconciled
   * (the store's state applied, or the store re-seeded with this instance's).
   */
  get divergences(): number {
    return this.divergedCount
  }

  get isReady(): boolean {
    return this.ready
  }

  /**
   * True when, as far as this instance knows, it applied the store's latest revision: running,
   * connected, no sync or whole compile under way, and no newer revision heard of. A write may
   * then start from the applied state without asking the store (its compare-and-set decides).
   */
  get current(): boolean {
    return this.ready && !this.closed && !this.running && !this.compiling && this.opts.store.connected && this.storeRevision === this.applied.revision
  }

  /** States the store held that failed to compile here (each revision counted once). */
  get applyFailures(): number {
    return this.failures
  }

  /**
   * The store's latest revision when this instance refused it because it fails validation
   * (a state no writer would accept: any instance refuses it), else undefined. A write then
   * replaces it, from the last good state (see `Writer.write`): how a fleet is healed through
   * the admin API. Not for a state refused for this host's reasons (a CA file it cannot read):
   * other instances may have applied that one, and a write here must not undo it.
   */
  get refusedRevision(): number | undefined {
    const r = this.invalidRevision
    return r === this.storeRevision && r > this.applied.revision ? r : undefined
  }

  /** Times the applied state stayed behind the store for more than `behindAlertMs` (one per episode). */
  get behindAlerts(): number {
    return this.alerts
  }

  /** Called after every table swap, with the state now in force (`effective`: discovered targets included). */
  onApplied(listener: (state: State) => void): void {
    this.listeners.add(listener)
  }

  /**
   * Opens the store, loads its state (seeding an empty store with the config's), applies it and
   * starts following. Throws when the store is unreachable or its state cannot be compiled:
   * an instance that cannot know the fleet's state must not serve.
   */
  async start(): Promise<void> {
    const { store, log } = this.opts
    store.onChange((revision, delta) => {
      this.wake?.()
      this.observe(revision)
      if (delta === undefined || !this.applyPublished(delta)) void this.sync()
    })
    store.onConnectionChange((up) => {
      log.info({ connected: up }, up ? 'store connected' : 'store disconnected')
      if (up) void this.sync()
    })
    await store.open()
    let state = (await store.load()) ?? (await this.fleetSeed())
    if (state === null) {
      if (await store.seed(this.opts.seed, this.appliedDigest)) log.info({ revision: this.opts.seed.revision }, 'seeded an empty store with the config file')
      state = (await store.load()) ?? this.opts.seed
    }
    this.observe(state.revision)
    if (!(await this.applyWhole(state, 'start'))) throw new Error(`the store's state (revision ${state.revision}) cannot be applied; see the log`)
    this.ready = true
    this.timer = setInterval(() => void this.check(), this.opts.resyncMs ?? RESYNC_MS)
    this.timer.unref()
    // Notices that came while starting were held back (start() reads the store itself); one
    // sync now catches a change made between that read and this point.
    void this.sync()
  }

  /**
   * An empty store at start may be a Redis that restarted empty under a running fleet, which
   * re-seeds it with the highest state it holds within a moment: seeding it from this
   * instance's file first would win that race with an older state (revision 1), and a write
   * acknowledged on it would then be overwritten by the fleet's re-seed. So wait up to
   * `seedWaitMs` for a state to appear; null when none did (the store is new: seed it).
   */
  private async fleetSeed(): Promise<State | null> {
    const waitMs = this.opts.seedWaitMs ?? SEED_WAIT_MS
    if (waitMs <= 0) return null
    const until = performance.now() + waitMs
    this.opts.log.info({ waitMs }, 'the store holds no state: waiting for a running fleet to re-seed it before seeding it from the config file')
    try {
      for (let left = waitMs; left > 0; left = until - performance.now()) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(SEED_POLL_MS, left))
          this.wake = () => {
            clearTimeout(timer)
            resolve()
          }
        })
        this.wake = undefined
        const state = await this.opts.store.load()
        if (state !== null) return state
      }
    } finally {
      this.wake = undefined
    }
    return null
  }

  /**
   * Brings the applied state up to the store's. Calls during a sync make it run once more
   * after it (so a notice that arrives mid-sync is never lost); the promise settles when no
   * more runs are pending. Never rejects: a store fault leaves the last state in force, and
   * the next notice, reconnect or check retries.
   */
  sync(): Promise<void> {
    this.again = true
    if (!this.running) this.flight = this.fly()
    return this.flight
  }

  /**
   * Applies a state known to be committed (this instance's own write) that changed `touched`
   * from the applied one. A state that does not follow the applied one directly (or comes
   * while a whole compile runs) is left to a sync, which fetches what lies in between.
   */
  offer(state: State, touched: Touched, digest: Digest): void {
    this.observe(state.revision)
    if (state.revision <= this.applied.revision) return
    if (!this.compiling && state.revision === this.applied.revision + 1) this.applyChange(state, touched, 'new', undefined, digest)
    else void this.sync()
  }

  /**
   * A change the store sent along with its notice: applied at once when it follows the applied
   * revision directly, with no round trip to the store. False when it cannot be (not ready, a
   * whole compile running, a gap, too large, a state that does not compile): the caller syncs,
   * which asks the store what lies in between.
   */
  private applyPublished(delta: Delta): boolean {
    if (!this.ready || this.closed || this.compiling) return false
    if (delta.revision <= this.applied.revision) return true
    if (delta.revision !== this.applied.revision + 1) return false
    const touched = touchedOf(delta)
    if (size(touched) > INCREMENTAL_MAX) return false
    let next: State
    try {
      next = applyDelta(this.applied, delta)
    } catch {
      return false // an order naming a route it does not bring: the store's own changes will tell
    }
    // Not applied, the store is asked: the sync reports a change that fails (once), and reads CA files off the loop.
    if (storedChangeProblems(next, delta, this.applied).length > 0) return false
    if (namesCa(next.upstreams, touched.upstreams)) return false
    // Another digest than the store says: the state this change applies to is not the store's (the sync heals it).
    const digest = digestAfter(this.appliedDigest, this.applied, next, touched)
    if (delta.digest !== undefined && delta.digest !== digest) return false
    return this.applyChange(next, touched, 'new', (name) => delta.routes[name] ?? undefined, digest)
  }

  /**
   * Reads the `tls.ca` files of the upstreams `names` of `upstreams` ahead of a compile, off
   * the event loop: the writer calls it for the upstreams a write touches, before committing.
   * The problems of those that cannot be used, at `upstreams.NAME.tls.ca`.
   */
  async readCaAhead(upstreams: Record<string, Upstream>, names: Iterable<string>): Promise<Problem[]> {
    const problems: Problem[] = []
    for (const name of names) {
      const paths = pemPaths(Object.hasOwn(upstreams, name) ? upstreams[name]!.tls?.ca : undefined)
      if (paths.length === 0) continue
      for (const err of await this.ca.load(paths)) problems.push({ path: formatPath(['upstreams', name, 'tls', 'ca']), message: err.message })
    }
    return problems
  }

  /** How long the applied revision has been behind the store's, in ms (0 when it is not). */
  behindMs(): number {
    return this.behindSince === null ? 0 : Date.now() - this.behindSince
  }

  /**
   * For another instance at `appliedRevision`: since when (epoch ms) this instance has known
   * that the store held a newer revision, or null when it knows of none.
   */
  newerKnownSince(appliedRevision: number): number | null {
    for (const seen of this.firstSeen) if (seen.revision > appliedRevision) return seen.at
    return null
  }

  close(): void {
    this.closed = true
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }

  private async fly(): Promise<void> {
    this.running = true
    try {
      while (this.again && !this.closed) {
        this.again = false
        try {
          await this.syncOnce()
        } catch (err) {
          // Store unreachable: keep proxying on the last state; a reconnect or the next check
          // retries. Anything else (a document that does not parse...) is worth a warning.
          const unreachable = err instanceof SwitchyardError && err.code === 'STORE_UNAVAILABLE'
          this.opts.log[unreachable ? 'debug' : 'warn']({ err }, 'sync with the store failed; will retry')
        }
      }
    } finally {
      this.running = false
    }
  }

  private async syncOnce(): Promise<void> {
    const { store, log } = this.opts
    // Before start() has applied the store's state, `applied` is only the config's seed: never
    // re-seed the store with it (start() seeds an empty store itself).
    if (!this.ready || !store.connected) return
    const base = this.applied.revision
    const asked = performance.now()
    // The common case: only what changed since the applied revision (nothing, for most checks).
    const delta = await store.changesSince(base)
    if (delta !== null) {
      this.observe(delta.revision, asked)
      // An own write applied meanwhile moved the base: the next round asks again from there.
      if (this.applied.revision !== base) {
        this.again = true
        return
      }
      if (delta.revision > base) {
        if (await this.applyFetched(delta)) return
      } else if (delta.digest === undefined || delta.digest === this.appliedDigest) return
      else if (!this.diverged(base, delta.digest)) return
      // The store's state at the applied revision is not this instance's: read it whole.
    }
    // The store cannot tell the changes (a gap longer than its log, a whole-state write, an
    // empty or older store): read it whole.
    let loadedAt = performance.now()
    let state = await store.load()
    if (state === null || state.revision < this.applied.revision) {
      // Redis came back empty (or older): give it the highest state this instance knows.
      if (await store.seed(this.applied, this.appliedDigest)) {
        this.divergedCount++
        log.warn({ revision: this.applied.revision, found: state?.revision ?? null }, 're-seeded the store with the last state this instance applied')
      }
      loadedAt = performance.now()
      state = await store.load()
    }
    if (state === null) return
    this.observe(state.revision, loadedAt)
    if (state.revision > this.applied.revision) await this.applyWhole(state)
    else if (state.revision === this.applied.revision && this.applied !== state) {
      // Same revision: the store's state wins when its content differs (a write that reused the revision).
      const digest = await stateDigestSliced(state)
      if (digest !== this.appliedDigest) await this.applyWhole(state, 'heal', digest)
    }
  }

  /**
   * The store holds `digest` at the revision this instance applied with another digest: two
   * states under one revision (after a failover to a stale replica, an instance that knew only
   * the replica wrote that revision again). The store's wins, as it is what every instance
   * reads from now on: logged, counted, and true when it is to be read whole now; false when
   * this one was healed already (its content does not match its digest: written behind the
   * fleet's back), so it is not read again and again.
   */
  private diverged(revision: number, digest: Digest): boolean {
    if (this.healedAlready(revision, digest)) return false
    this.healedAt = `${revision}:${digest}`
    this.divergedCount++
    this.opts.log.warn(
      { revision, digest: this.appliedDigest, storeDigest: digest },
      'the store holds another state at the revision this instance applied: applying the store\'s',
    )
    return true
  }

  /** Whether the store's state at `revision` with `digest` was healed to already (see `diverged`). */
  private healedAlready(revision: number, digest: Digest): boolean {
    return this.healedAt === `${revision}:${digest}`
  }

  /**
   * A change `changesSince` read, on top of the applied state: checked, its CA files read,
   * applied; or reported. False when the state it makes has another digest than the store's:
   * the applied state is not the one the store changed, and the caller reads the store whole.
   */
  private async applyFetched(delta: Delta): Promise<boolean> {
    const before = this.applied
    let next: State
    try {
      next = applyDelta(before, delta)
    } catch (err) {
      this.failed(delta.revision, new SwitchyardError('VALIDATION_FAILED', `the store's change is inconsistent: ${(err as Error).message}`), true)
      return true
    }
    const touched = touchedOf(delta)
    const digest = digestAfter(this.appliedDigest, before, next, touched)
    if (size(touched) > INCREMENTAL_MAX) {
      if (delta.digest !== undefined && delta.digest !== digest) return !this.diverged(before.revision, delta.digest)
      await this.applyWhole(next, 'new', digest)
      return true
    }
    const problems = storedChangeProblems(next, delta, before)
    if (problems.length > 0) {
      this.failed(next.revision, invalid(problems), true)
      return true
    }
    if (namesCa(next.upstreams, touched.upstreams)) {
      const ca = await this.readCaAhead(next.upstreams, touched.upstreams)
      if (ca.length > 0) {
        this.failed(next.revision, invalid(ca))
        return true
      }
    }
    // A change that is sound in itself, on a state that is not the store's (another digest): read the store whole.
    if (delta.digest !== undefined && delta.digest !== digest) return !this.diverged(before.revision, delta.digest)
    // An own write applied while the files were read: the next round starts from it.
    if (this.applied !== before) {
      this.again = true
      return true
    }
    this.applyChange(next, touched, 'new', (name) => delta.routes[name] ?? undefined, digest)
    return true
  }

  /**
   * The periodic check, apart from the sync's single flight: reads the store's revision,
   * records divergence, and starts a sync when the revisions differ.
   */
  private async check(): Promise<void> {
    if (this.closed) return
    if (this.opts.store.connected) {
      try {
        const asked = performance.now()
        const head = await this.opts.store.head()
        this.observe(head?.revision ?? null, asked)
        if (head?.revision !== this.applied.revision) void this.sync()
        else if (head.digest !== null && head.digest !== this.appliedDigest && !this.healedAlready(head.revision, head.digest)) void this.sync()
      } catch {
        // unreachable: `store_connected` says so; the reconnect syncs
      }
    }
    this.report()
  }

  /**
   * Records the store's revision as seen now (a notice of -1 means "reload", not a revision).
   * `askedAt` (performance.now()) is when a read was sent: a lower revision from a read sent
   * before the current one was seen is stale (the two crossed), not a store that went back.
   */
  private observe(revision: number | null, askedAt = performance.now()): void {
    if (revision === null || revision < 0) return
    if (revision < this.storeRevision && askedAt < this.storeRevisionSeenAt) return
    if (revision !== this.storeRevision) {
      this.storeRevision = revision
      this.storeRevisionSeenAt = performance.now()
      // A store that went back (restarted, re-seeded lower) invalidates what was seen above it.
      while (this.firstSeen.length > 0 && this.firstSeen[this.firstSeen.length - 1]!.revision >= revision) this.firstSeen.pop()
      this.firstSeen.push({ revision, at: Date.now() })
      if (this.firstSeen.length > SEEN_CAP) this.firstSeen.shift()
    }
    this.updateBehind()
  }

  private updateBehind(): void {
    if (this.storeRevision > this.applied.revision) {
      this.behindSince ??= Date.now()
      return
    }
    if (this.behindSince !== null && this.lastWarning !== 0) {
      this.opts.log.info({ revision: this.applied.revision, behindMs: this.behindMs() }, 'caught up with the store')
    }
    this.behindSince = null
    this.lastWarning = 0
  }

  private report(): void {
    const behind = this.behindMs()
    const alertMs = this.opts.behindAlertMs ?? BEHIND_ALERT_MS
    if (behind <= alertMs) return
    const now = Date.now()
    if (this.lastWarning !== 0 && now - this.lastWarning < BEHIND_REPEAT_MS) return
    if (this.lastWarning === 0) this.alerts++
    this.lastWarning = now
    this.opts.log.warn(
      { appliedRevision: this.applied.revision, storeRevision: this.storeRevision, behindMs: behind, connected: this.opts.store.connected },
      'the applied state is behind the store',
    )
  }

  /**
   * Compiles `state` whole, in slices that yield to the event loop (start, a reload after a
   * gap or an outage), and swaps it in; false (logged and counted once per revision) when it
   * cannot. Only `start` applies a state that is not newer.
   */
  private async applyWhole(state: State, mode: 'new' | 'start' | 'heal' = 'new', digest?: Digest): Promise<boolean> {
    if (mode === 'new' && state.revision <= this.applied.revision) return true
    if (mode === 'heal' && state.revision !== this.applied.revision) return true
    let table: RoutingTable
    let effective: State
    let invalidContent = false
    this.compiling = true
    try {
      // Every state compiled whole comes from the store: checked first, as an admin write is.
      const problems = await storedStateProblems(state)
      invalidContent = problems.length > 0
      if (invalidContent) throw invalid(problems)
      const ca = await this.readCaAhead(state.upstreams, Object.keys(state.upstreams))
      if (ca.length > 0) throw invalid(ca)
      digest ??= await stateDigestSliced(state)
      effective = effectiveState(state, this.providers)
      table = await compileTableSliced(effective, this.opts.dataplane.resources, this.compileOptions(effective))
    } catch (err) {
      this.failed(state.revision, err, invalidContent)
      return false
    } finally {
      this.compiling = false
    }
    // A whole compile yields to the event loop: a heal applies only over the revision it healed.
    if (mode === 'heal' && state.revision !== this.applied.revision) return true
    this.opts.dataplane.setTable(table)
    this.swapped(table, state, effective, { whole: true }, digest)
    indexRoutes(state.routes)
    if (this.refreshPending) {
      this.refreshPending = false
      this.refresh()
    }
    return true
  }

  /**
   * Swaps in `state`, which changed `touched` from the applied state, recompiling only those
   * (and the upstreams whose discovered targets changed); false (logged and counted once per
   * revision) when it cannot.
   */
  private applyChange(state: State, touched: Touched, mode: 'new' | 'refresh' = 'new', specOf?: (name: string) => RouteSpec | undefined, digest?: Digest): boolean {
    const prev = this.table
    if (prev === null) return false
    const effective = effectiveState(state, this.providers)
    const all = effective === state && this.compiled === this.applied ? touched : withDiscovered(touched, this.compiled, effective)
    let update
    try {
      update = updateTable(prev, effective, all, this.opts.dataplane.resources, this.compileOptions(effective), specOf)
    } catch (err) {
      this.failed(state.revision, err)
      return false
    }
    this.opts.dataplane.setTable(update.table, update.released)
    const d = mode === 'refresh' ? this.appliedDigest : (digest ?? digestAfter(this.appliedDigest, this.applied, state, touched))
    this.swapped(update.table, state, effective, mode === 'refresh' ? null : { whole: false, changed: size(all) }, d)
    return true
  }

  private compileOptions(effective: State): CompileOptions {
    const provided = new Map<string, Set<string>>()
    const providedIn = (u: string): Set<string> => {
      let ids = provided.get(u)
      if (ids === undefined) {
        ids = new Set((effective.upstreams[u]?.targets ?? []).filter(isProvided).map((t) => t.id))
        provided.set(u, ids)
      }
      return ids
    }
    return {
      // Discovered targets join like targets added at run time: after their first passing check.
      initiallyHealthy: (u, id) =>
        effective.upstreams[u]?.healthCheck === undefined || (!providedIn(u).has(id) && this.seedTargets.has(`${u}/${id}`)),
      // Read when an upstream naming them compiles (at start, on its change): files replaced on disk count from then on.
      readCa: this.ca.read,
    }
  }

  /** `invalid`: the state itself fails validation (any instance would refuse it), not this host's files or resources. */
  private failed(revision: number, err: unknown, invalid = false): void {
    if (invalid) this.invalidRevision = revision
    if (revision === this.failedRevision) return
    this.failedRevision = revision
    this.failures++
    this.opts.log.error({ err, revision, appliedRevision: this.applied.revision }, 'cannot apply the state: keeping the last one')
  }

  /** `how`: null for a refresh of discovered targets, else whether it was compiled whole or only `changed` resources. */
  private swapped(table: RoutingTable, state: State, effective: State, how: { whole: boolean; changed?: number } | null, digest: Digest): void {
    this.table = table
    this.applied = state
    this.appliedDigest = digest
    this.compiled = effective
    this.updateBehind()
    if (how === null) this.opts.log.debug({ revision: state.revision }, 'applied discovered targets')
    else this.opts.log.info({ revision: state.revision, ...how }, 'applied state')
    for (const listener of this.listeners) {
      try {
        listener(effective)
      } catch (err) {
        this.opts.log.error({ err, revision: state.revision }, 'a listener of applied states failed')
      }
    }
  }
}

/** A state from the store that fails the checks of an admin write. */
function invalid(problems: readonly Problem[]): SwitchyardError {
  return new SwitchyardError('VALIDATION_FAILED', `the store's state does not pass validation: ${describeProblems(problems)}`, { details: [...problems] })
}

/** Whether one of the upstreams `names` of `upstreams` has `tls.ca` files (to read before compiling it). */
function namesCa(upstreams: Record<string, Upstream>, names: readonly string[]): boolean {
  for (const name of names) if (Object.hasOwn(upstreams, name) && upstreams[name]!.tls?.ca !== undefined) return true
  return false
}

function size(t: Touched): number {
  return t.upstreams.length + t.routes.length + t.flags.length + t.rollouts.length
}

/**
 * `touched` plus the upstreams whose compiled form differs only by discovered targets: those
 * whose effective upstream is not the state's own object, before or after.
 */
function withDiscovered(touched: Touched, before: State, after: State): Touched {
  const names = new Set(touched.upstreams)
  for (const [name, u] of Object.entries(after.upstreams)) if (u !== before.upstreams[name]) names.add(name)
  for (const name of Object.keys(before.upstreams)) if (!Object.hasOwn(after.upstreams, name)) names.add(name)
  return { ...touched, upstreams: [...names] }
}
