/**
 * The Redis store: one state shared by a fleet of proxy instances.
 *
 * Two connections (redis-connection.ts): `cmd` runs commands and scripts, `sub` only
 * listens on the changes channel. Every multi-key write is one Lua script
 * (redis-scripts.ts), so it is atomic and revision-checked on the server; all keys share
 * one hash tag (see keys.ts) so the scripts also run on Redis Cluster.
 *
 * Failure model: while Redis is down the store fails fast instead of queueing — the proxy
 * keeps serving its last applied state and an admin write must answer 503 at once. The
 * connection settings that make it so are explained in redis-connection.ts.
 * Every failure surfaces as SwitchyardError('STORE_UNAVAILABLE') with the cause attached.
 *
 * After any outage (either connection) the store waits until `cmd` is ready and `sub` has
 * re-subscribed, then calls every onChange listener with -1: messages may have been missed,
 * or Redis may have restarted empty, so the control plane must reload (and maybe re-seed).
 */
import assert from 'node:assert/strict'
import type { State } from '../config/schema.js'
import { DEFAULTS } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { EVENTS_CAP, storeKeys } from './keys.js'
import type { StoreKeys } from './keys.js'
import { RedisConnections } from './redis-connection.js'
import type { RedisClient } from './redis-connection.js'
import { COMMIT, INSTANCES, REGISTER, RELEASE_LEASE, RENEW_LEASE, SEED } from './redis-scripts.js'
import type { AuditEvent, CommitResult, InstanceInfo, Store } from './store.js'

export interface RedisStoreOptions {
  /** `redis://` or `rediss://` URL; without it ioredis defaults (or Sentinel options) apply. */
  url?: string
  /** Key prefix shared by the fleet; default `switchyard`. */
  prefix?: string
  /**
   * Passed to ioredis as they are and win over CONNECTION_DEFAULTS in redis-connection.ts
   * (Sentinel: `sentinels`, `name`; TLS: `tls`; ...). One addition: `clusterNodes: [...]`
   * makes a Redis Cluster client (ioredis `Cluster`), the remaining options being its
   * ClusterOptions (per-node settings in `redisOptions`).
   */
  options?: Record<string, unknown>
  /** How long `open()` waits for Redis before rejecting. Default 3000 ms. */
  openTimeoutMs?: number
}

const OPEN_TIMEOUT_MS = 3_000 // within the 5 s a start-up may wait, and > one connectTimeout

export class RedisStore implements Store {
  readonly kind = 'redis' as const
  readonly keys: StoreKeys
  private readonly conn: RedisConnections
  /** `conn.cmd`: runs every command and script. */
  private readonly cmd: RedisClient
  private readonly openTimeoutMs: number
  private readonly changeListeners = new Set<(revision: number) => void>()
  private readonly connectionListeners = new Set<(connected: boolean) => void>()

  constructor(options: RedisStoreOptions = {}) {
    this.keys = storeKeys(options.prefix ?? DEFAULTS.redisPrefix)
    this.openTimeoutMs = options.openTimeoutMs ?? OPEN_TIMEOUT_MS
    this.conn = new RedisConnections(options, this.keys, {
      onConnectionChange: (connected) => {
        for (const listener of this.connectionListeners) callSafely(listener, connected)
      },
      onResync: () => this.emitChange(-1),
    })
    this.cmd = this.conn.cmd
    this.conn.sub.on('message', (channel: string, message: string) => {
      const revision = Number(message)
      if (channel === this.keys.changes && Number.isInteger(revision)) this.emitChange(revision)
    })
  }

  /** True while the command connection is ready, i.e. while reads and writes can succeed. */
  get connected(): boolean {
    return this.conn.connected
  }

  /**
   * Connects both connections and subscribes. Rejects with STORE_UNAVAILABLE when that has
   * not happened within `openTimeoutMs` (3 s); the store is then closed, so no timer or
   * socket is left behind. To try again, make a new RedisStore.
   */
  async open(): Promise<void> {
    if (this.conn.closed) throw unavailable('the redis store is closed')
    const up = await this.conn.open(this.openTimeoutMs)
    if (!up) {
      const lastError = this.conn.lastError
      const why = lastError === null ? '' : `: ${lastError.message}`
      const err = unavailable(`redis not reachable within ${this.openTimeoutMs} ms${why}`, lastError)
      await this.close()
      throw err
    }
  }

  async load(): Promise<State | null> {
    const json = await this.call(() => this.cmd.get(this.keys.state))
    return json === null ? null : parseJson<State>(json, 'state')
  }

  async revision(): Promise<number | null> {
    const value = await this.call(() => this.cmd.get(this.keys.revision))
    return value === null ? null : Number(value)
  }

  /**
   * One script: compares the stored revision with `expected`, then writes state and
   * revision, appends the event (LPUSH + LTRIM to EVENTS_CAP) and publishes the revision.
   * An empty store accepts `expected === 0` (a first write) and answers `empty` otherwise,
   * so an instance that knows a state re-seeds it before writing (a write never starts from empty).
   */
  async commit(next: State, event: AuditEvent, expected: number): Promise<CommitResult> {
    assert.equal(next.revision, expected + 1, 'commit: next.revision must be expected + 1')
    const k = this.keys
    const reply = await this.call(() =>
      COMMIT.run(this.cmd, [k.state, k.revision, k.events], [expected, next.revision, JSON.stringify(next), JSON.stringify(event), EVENTS_CAP, k.changes]),
    )
    const [code, revision] = reply as [number, number?]
    if (code === 1) return { ok: true, revision: next.revision }
    if (code === 0 && revision !== undefined) return { ok: false, reason: 'revision-mismatch', currentRevision: revision }
    return { ok: false, reason: 'empty' }
  }

  /** One script: writes iff the store is empty or holds a lower revision; publishes when it wrote. */
  async seed(state: State): Promise<boolean> {
    const k = this.keys
    const reply = await this.call(() => SEED.run(this.cmd, [k.state, k.revision], [state.revision, JSON.stringify(state), k.changes]))
    return reply === 1
  }

  // TEMPORARY (replaced by the stores branch)
  async changesSince(_revision: number): Promise<import('./delta.js').Delta | null> {
    return null
  }

  onChange(listener: (revision: number) => void): void {
    this.changeListeners.add(listener)
  }

  onConnectionChange(listener: (connected: boolean) => void): void {
    this.connectionListeners.add(listener)
  }

  async events(limit: number): Promise<AuditEvent[]> {
    const n = Math.min(Math.max(0, Math.floor(limit)), EVENTS_CAP)
    if (n === 0) return []
    const list = await this.call(() => this.cmd.lrange(this.keys.events, 0, n - 1))
    return list.map((json) => parseJson<AuditEvent>(json, 'event'))
  }

  /** SET with PX (Redis expires a dead instance by itself) and SADD to the index, atomically. */
  async register(info: Omit<InstanceInfo, 'lastSeen'>, ttlMs: number): Promise<void> {
    const full: InstanceInfo = { ...info, lastSeen: new Date().toISOString() }
    const ttl = Math.max(1, Math.ceil(ttlMs))
    const k = this.keys
    await this.call(() => REGISTER.run(this.cmd, [k.instances, k.instance(info.id)], [info.id, JSON.stringify(full), ttl]))
  }

  async unregister(id: string): Promise<void> {
    const k = this.keys
    await this.call(() => this.cmd.multi().del(k.instance(id)).srem(k.instances, id).exec())
  }

  /** Live instances, sorted by id; the script prunes ids whose key has expired. */
  async instances(): Promise<InstanceInfo[]> {
    const k = this.keys
    const list = (await this.call(() => INSTANCES.run(this.cmd, [k.instances], [k.instancePrefix]))) as string[]
    return list.map((json) => parseJson<InstanceInfo>(json, 'instance')).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }

  /** `SET NX PX` takes a free lease; the renew script extends one `holder` already holds. */
  async lease(name: string, holder: string, ttlMs: number): Promise<boolean> {
    const key = this.keys.lease(name)
    const ttl = Math.max(1, Math.ceil(ttlMs))
    const taken = await this.call(() => this.cmd.set(key, holder, 'PX', ttl, 'NX'))
    if (taken === 'OK') return true
    return (await this.call(() => RENEW_LEASE.run(this.cmd, [key], [holder, ttl]))) === 1
  }

  async releaseLease(name: string, holder: string): Promise<boolean> {
    return (await this.call(() => RELEASE_LEASE.run(this.cmd, [this.keys.lease(name)], [holder]))) === 1
  }

  async leaseHolder(name: string): Promise<string | null> {
    return this.call(() => this.cmd.get(this.keys.lease(name)))
  }

  /** Quits both connections (or drops them when Redis is down); leaves no socket or reconnect timer. */
  async close(): Promise<void> {
    if (this.conn.closed) return
    this.changeListeners.clear()
    this.connectionListeners.clear()
    await this.conn.close()
  }

  /** Runs one Redis call, failing fast while disconnected and mapping every failure to STORE_UNAVAILABLE. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    if (this.conn.closed) throw unavailable('the redis store is closed')
    if (this.cmd.status !== 'ready') throw unavailable(`redis is not connected (${this.cmd.status})`, this.conn.lastError)
    try {
      return await fn()
    } catch (err) {
      // An open socket that stopped answering means a hung or unreachable server: recycle
      // both connections so `connected` reflects it and the subscriber is not left on a
      // dead socket (the reconnect then re-subscribes and triggers the -1 reload).
      if (err instanceof Error && err.message === 'Command timed out') {
        this.cmd.disconnect(true)
        this.conn.sub.disconnect(true)
      }
      throw unavailable(`redis: ${err instanceof Error ? err.message : String(err)}`, err)
    }
  }

  private emitChange(revision: number): void {
    if (this.conn.closed) return
    for (const listener of this.changeListeners) callSafely(listener, revision)
  }
}

function unavailable(message: string, cause?: unknown): SwitchyardError {
  return new SwitchyardError('STORE_UNAVAILABLE', message, cause === undefined || cause === null ? undefined : { cause })
}

function parseJson<T>(json: string, what: string): T {
  try {
    return JSON.parse(json) as T
  } catch (err) {
    throw new SwitchyardError('INTERNAL', `the stored ${what} is not valid JSON`, { cause: err })
  }
}

function callSafely<A>(listener: (arg: A) => void, arg: A): void {
  try {
    listener(arg)
  } catch (err) {
    // A faulty listener must not stop the others nor break the connection's event loop.
    process.emitWarning(`switchyard store listener threw: ${err instanceof Error ? err.message : String(err)}`)
  }
}

