/**
 * The Redis store: one state shared by a fleet of proxy instances.
 *
 * Two connections (redis-connection.ts): `cmd` runs commands and scripts, `sub` only
 * listens on the changes channel. Every multi-key write is one Lua script
 * (redis-scripts.ts), so it is atomic and revision-checked on the server; all keys share
 * one hash tag (see keys.ts) so the scripts also run on Redis Cluster. The state is kept
 * per resource (layout in keys.ts): a commit sends and stores only what it touched, and a
 * follower's `changesSince` receives only the resources changed since its revision, so what
 * a write costs does not grow with the size of the state. Every read of the state is one
 * script too, so it is one snapshot.
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
import type { TelemetrySample } from '../telemetry/types.js'
import assert from 'node:assert/strict'
import type { State } from '../config/schema.js'
import { DEFAULTS } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { stateDigest } from '../state/digest.js'
import { RESOURCE_KINDS, type Delta, type ResourceKind, type Touched } from '../state/delta.js'
import { CHANGELOG_CAP, EVENTS_CAP, storeKeys } from './keys.js'
import type { StoreKeys } from './keys.js'
import { RedisConnections } from './redis-connection.js'
import type { RedisClient } from './redis-connection.js'
import { CHANGES, COMMIT, CONVERT, INSTANCES, LOAD, REGISTER, RELEASE_LEASE, RENEW_LEASE, SEED, STATE_KEYS } from './redis-scripts.js'
import { allResources, decodeDelta, decodeState, normalizeTouched, parseStored, routeNames, touchedResources, type Writes } from './resources.js'
import type { AuditEvent, CommitResult, InstanceInfo, Store, StoreHead } from './store.js'

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
  /** How many revisions the change log covers; default CHANGELOG_CAP (tests lower it). */
  changelogCap?: number
}

/** A commit or a load finds the old layout at most this often in a row before giving up. */
const CONVERT_ATTEMPTS = 5

const OPEN_TIMEOUT_MS = 3_000 // within the 5 s a start-up may wait, and > one connectTimeout

export class RedisStore implements Store {
  readonly kind = 'redis' as const
  readonly keys: StoreKeys
  private readonly conn: RedisConnections
  /** `conn.cmd`: runs every command and script. */
  private readonly cmd: RedisClient
  private readonly openTimeoutMs: number
  private readonly changelogCap: number
  /** The state keys in the scripts' KEYS order. */
  private readonly stateKeys: string[]
  private readonly changeListeners = new Set<(revision: number, delta?: Delta) => void>()
  private readonly connectionListeners = new Set<(connected: boolean) => void>()

  constructor(options: RedisStoreOptions = {}) {
    this.keys = storeKeys(options.prefix ?? DEFAULTS.redisPrefix)
    this.openTimeoutMs = options.openTimeoutMs ?? OPEN_TIMEOUT_MS
    this.changelogCap = options.changelogCap ?? CHANGELOG_CAP
    this.stateKeys = STATE_KEYS.map((name) => this.keys[name])
    this.conn = new RedisConnections(options, this.keys, {
      onConnectionChange: (connected) => {
        for (const listener of this.connectionListeners) callSafely(listener, connected)
      },
      onResync: () => this.emitChange(-1),
    })
    this.cmd = this.conn.cmd
    this.conn.sub.on('message', (channel: string, message: string) => {
      // `<revision> <what changed>[\n<Delta JSON>]`: listeners need the revision, and the change
      // itself when it came along; otherwise changesSince() reads it.
      const revision = /^\d+(?= |$)/.exec(message)
      if (channel === this.keys.changes && revision !== null) {
        const rev = Number(revision[0])
        this.emitChange(rev, publishedDelta(message, rev))
      }
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
      const err = unavailable(openFailure(this.openTimeoutMs, lastError), lastError)
      await this.close()
      throw err
    }
    // An upgraded fleet keeps its state: convert the old layout now rather than on the first
    // read. A failure here is not fatal: every read converts it too, and reports why it cannot.
    await this.convertOldLayout().catch(() => {})
  }

  /** One script reads revision, route order and every hash, so the state is one snapshot. */
  async load(): Promise<State | null> {
    for (let attempt = 0; attempt < CONVERT_ATTEMPTS; attempt++) {
      const reply = (await this.call(() => LOAD.run(this.cmd, this.stateKeys, []))) as [number, ...unknown[]]
      if (reply[0] === 2) {
        await this.convertOldLayout()
        continue
      }
      if (reply[0] !== 1) return null
      const [, revision, order, ...hashes] = reply as [1, string, string | null, ...string[][]]
      const stored = {} as Record<ResourceKind, Array<[string, string]>>
      RESOURCE_KINDS.forEach((kind, i) => (stored[kind] = pairs(hashes[i]!)))
      // Hash fields come in no particular order: sort names so every instance lists them alike.
      return decodeState(Number(revision), order === null ? [] : parseStored<string[]>(order, 'route order'), stored, true)
    }
    throw oldLayoutStuck()
  }

  /**
   * Revision and digest read together in one MULTI (one slot: same hash tag), with the GET a
   * least-privileged ACL user already has, rather than MGET it may not.
   */
  async head(): Promise<StoreHead | null> {
    const replies = (await this.call(() => this.cmd.multi().get(this.keys.revision).get(this.keys.digest).exec())) ?? []
    const [[e1, revision] = [], [e2, digest] = []] = replies as Array<[Error | null, string | null]>
    if (e1 || e2) throw unavailable(`redis: ${(e1 ?? e2)!.message}`, e1 ?? e2)
    return revision === null || revision === undefined ? null : { revision: Number(revision), digest: digest ?? null }
  }

  async revision(): Promise<number | null> {
    const value = await this.call(() => this.cmd.get(this.keys.revision))
    return value === null ? null : Number(value)
  }

  /**
   * One script: compares the stored revision with `expected`, then writes the touched
   * resources (or, without `touched`, replaces them all), sets the revision, logs what
   * changed, appends the event (LPUSH + LTRIM to EVENTS_CAP) and publishes
   * `<revision> <touched JSON>`. An empty store accepts `expected === 0` (a first write,
   * always whole) and answers `empty` otherwise, so an instance that knows a state re-seeds
   * it before writing (a write never starts from empty).
   */
  async commit(next: State, event: AuditEvent, expected: number, touched?: Touched | null, digest?: string): Promise<CommitResult> {
    assert.equal(next.revision, expected + 1, 'commit: next.revision must be expected + 1')
    const whole = touched === undefined || touched === null || expected === 0
    let names = whole ? null : normalizeTouched(touched)
    const eventJson = JSON.stringify(event)
    const d = digest ?? stateDigest(next)
    for (let attempt = 0; attempt < CONVERT_ATTEMPTS; attempt++) {
      const head = [expected, next.revision, eventJson, EVENTS_CAP, this.changelogCap, this.keys.changes]
      let body: string[]
      if (names === null) body = ['*', JSON.stringify(routeNames(next)), '', d, ...resourceArgs(allResources(next))]
      else {
        const order = names.order ? JSON.stringify(routeNames(next)) : ''
        const writes = touchedResources(next, names)
        body = [JSON.stringify(names), order, deltaMessage(next.revision, order, writes, d), d, ...resourceArgs(writes)]
      }
      const reply = await this.call(() => COMMIT.run(this.cmd, [...this.stateKeys, this.keys.events], [...head, ...body]))
      const [code, revision] = reply as [number, number?]
      if (code === 1) return { ok: true, revision: next.revision }
      if (code === 0 && revision !== undefined) return { ok: false, reason: 'revision-mismatch', currentRevision: revision }
      if (code === -1) return { ok: false, reason: 'empty' }
      if (code === -2 && names !== null) names = { ...names, order: true } // a route comes or goes: send the order
      else if (code === -3) await this.convertOldLayout()
      else throw new SwitchyardError('INTERNAL', `unexpected reply from the commit script: ${JSON.stringify(reply)}`)
    }
    throw oldLayoutStuck()
  }

  /** One script: replaces everything iff the store is empty or holds a lower revision; publishes when it wrote. */
  async seed(state: State, digest?: string): Promise<boolean> {
    const d = digest ?? stateDigest(state)
    const args = [state.revision, this.changelogCap, this.keys.changes, JSON.stringify(routeNames(state)), d, ...resourceArgs(allResources(state))]
    const reply = await this.call(() => SEED.run(this.cmd, this.stateKeys, args))
    return reply === 1
  }

  /** One script reads the change log above `revision` and the resources it names. */
  async changesSince(revision: number): Promise<Delta | null> {
    if (!Number.isInteger(revision)) return null
    const reply = (await this.call(() => CHANGES.run(this.cmd, this.stateKeys, [revision]))) as [number, ...unknown[]]
    if (reply[0] !== 1) return null
    const [, current, order, digest, ...lists] = reply as [1, number, string | null, string | null, ...Array<Array<string | null>>]
    const changed = {} as Record<ResourceKind, Array<[string, string | null]>>
    RESOURCE_KINDS.forEach((kind, i) => {
      const names = lists[2 * i]!
      const values = lists[2 * i + 1]!
      changed[kind] = names.map((name, j) => [name!, values[j] ?? null])
    })
    const delta = decodeDelta(current, order === null ? undefined : parseStored<string[]>(order, 'route order'), changed)
    if (typeof digest === 'string') delta.digest = digest
    return delta
  }

  /**
   * Converts a store written by an older version (one `{p}:state` document) to the
   * per-resource layout, keeping its revision. The script writes only while that document
   * is still there at the revision read, so racing instances convert it once, and a newer
   * document an older version wrote meanwhile is read again.
   */
  private async convertOldLayout(): Promise<void> {
    for (let attempt = 0; attempt < CONVERT_ATTEMPTS; attempt++) {
      const json = await this.call(() => this.cmd.get(this.keys.legacyState))
      if (json === null) return
      const state = parseStored<State>(json, 'state')
      const args = [state.revision, this.changelogCap, JSON.stringify(routeNames(state)), ...resourceArgs(allResources(state))]
      if ((await this.call(() => CONVERT.run(this.cmd, this.stateKeys, args))) === 1) return
    }
    throw oldLayoutStuck()
  }

  onChange(listener: (revision: number, delta?: Delta) => void): void {
    this.changeListeners.add(listener)
  }

  onConnectionChange(listener: (connected: boolean) => void): void {
    this.connectionListeners.add(listener)
  }

  async events(limit: number): Promise<AuditEvent[]> {
    const n = Math.min(Math.max(0, Math.floor(limit)), EVENTS_CAP)
    if (n === 0) return []
    const list = await this.call(() => this.cmd.lrange(this.keys.events, 0, n - 1))
    return list.map((json) => parseStored<AuditEvent>(json, 'event'))
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
    return list.map((json) => parseStored<InstanceInfo>(json, 'instance')).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
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

  /** One pipeline: add the sample, drop those past the retention, refresh the key's expiry and the index. */
  async pushTelemetry(sample: TelemetrySample, retainMs: number): Promise<void> {
    const k = this.keys
    const key = k.telemetry(sample.instance)
    const ttl = Math.max(1, Math.ceil(retainMs))
    await this.call(() =>
      this.cmd
        .multi()
        .zadd(key, sample.at, JSON.stringify(sample))
        .zremrangebyscore(key, '-inf', sample.at - ttl)
        .pexpire(key, ttl)
        .sadd(k.telemetryInstances, sample.instance)
        .exec(),
    )
  }

  /** The index, then each instance's samples after `sinceMs` in one pipeline; ids whose key expired leave the index. */
  async telemetry(sinceMs: number): Promise<TelemetrySample[]> {
    const k = this.keys
    const ids = await this.call(() => this.cmd.smembers(k.telemetryInstances))
    if (ids.length === 0) return []
    const pipe = this.cmd.pipeline()
    for (const id of ids) pipe.zrangebyscore(k.telemetry(id), `(${sinceMs}`, '+inf')
    for (const id of ids) pipe.exists(k.telemetry(id))
    const replies = (await this.call(() => pipe.exec())) ?? []
    const out: TelemetrySample[] = []
    const gone: string[] = []
    ids.forEach((id, i) => {
      const [err, list] = replies[i] ?? []
      if (err) throw err
      for (const json of list as string[]) out.push(parseStored<TelemetrySample>(json, 'telemetry sample'))
      if (replies[ids.length + i]?.[1] === 0) gone.push(id)
    })
    if (gone.length > 0) await this.call(() => this.cmd.srem(k.telemetryInstances, ...gone)).catch(() => 0)
    return out
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

  private emitChange(revision: number, delta?: Delta): void {
    if (this.conn.closed) return
    for (const listener of this.changeListeners) {
      try {
        listener(revision, delta)
      } catch (err) {
        process.emitWarning(`switchyard store listener threw: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
  }
}

function unavailable(message: string, cause?: unknown): SwitchyardError {
  return new SwitchyardError('STORE_UNAVAILABLE', message, cause === undefined || cause === null ? undefined : { cause })
}

/** The writes as the scripts read them: per hash, a count, then name and JSON ('' deletes). */
function resourceArgs(writes: Writes): string[] {
  const args: string[] = []
  for (const kind of RESOURCE_KINDS) {
    args.push(String(writes[kind].length))
    for (const [name, json] of writes[kind]) args.push(name, json ?? '')
  }
  return args
}

/**
 * A commit's change travels in its message when its JSON is at most this long (characters):
 * every subscriber receives it, so a follower one revision behind applies it with no round
 * trip, while a large change (many resources, a 10,000-route order) is fetched by those that
 * need it (`changesSince`). 18 followers × 8 KB is still a small burst for Redis.
 */
export const PUBLISHED_DELTA_MAX = 8 * 1024

/**
 * The JSON of the Delta from `revision - 1` to `revision` (the stored JSON of each written
 * resource, `null` for a deletion, and the route order when it changed), or '' when longer
 * than PUBLISHED_DELTA_MAX. Built from the already-encoded resources, never encoding twice.
 */
function deltaMessage(revision: number, order: string, writes: Writes, digest: string): string {
  let length = order.length
  for (const kind of RESOURCE_KINDS) for (const [name, json] of writes[kind]) length += name.length + (json?.length ?? 4) + 8
  if (length > PUBLISHED_DELTA_MAX) return ''
  let out = `{"revision":${revision}`
  for (const kind of RESOURCE_KINDS) {
    out += `,"${kind}":{`
    writes[kind].forEach(([name, json], i) => (out += `${i === 0 ? '' : ','}${JSON.stringify(name)}:${json ?? 'null'}`))
    out += '}'
  }
  if (order !== '') out += `,"order":${order}`
  out += `,"digest":${JSON.stringify(digest)}}`
  return out.length > PUBLISHED_DELTA_MAX ? '' : out
}

/**
 * The Delta a change message carries (see deltaMessage), or undefined when it carries none or
 * one that does not parse or does not look like a Delta to `revision`: the listener then asks
 * `changesSince`, as for any message, so a bad one costs a round trip, never a wrong state.
 */
function publishedDelta(message: string, revision: number): Delta | undefined {
  const newline = message.indexOf('\n')
  if (newline < 0) return undefined
  let delta: Delta
  try {
    delta = JSON.parse(message.slice(newline + 1)) as Delta
  } catch {
    return undefined
  }
  if (delta === null || typeof delta !== 'object' || delta.revision !== revision) return undefined
  for (const kind of RESOURCE_KINDS) {
    const record = delta[kind] as unknown
    if (record === null || typeof record !== 'object' || Array.isArray(record)) return undefined
  }
  if (delta.order !== undefined && !(Array.isArray(delta.order) && delta.order.every((name) => typeof name === 'string'))) return undefined
  if (delta.digest !== undefined && typeof delta.digest !== 'string') return undefined
  return delta
}

/** An HGETALL reply (name, value, name, value...) as pairs. */
function pairs(flat: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = []
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!])
  return out
}

/**
 * Why open() gave up, in words that point at the setting to fix: Redis answered but refused
 * the user or password (a reachable server is not "not reachable"), or refused a command or
 * channel its ACL does not grant; the TLS handshake failed (the CA, or the server's name); or
 * nothing usable answered. The message never holds the URL, so never its password.
 */
function openFailure(timeoutMs: number, err: Error | null): string {
  if (err === null) return `redis not reachable within ${timeoutMs} ms`
  if (/^(WRONGPASS|NOAUTH)\b/.test(err.message)) return `redis refused the login (the user and password in store.url or store.options): ${err.message}`
  if (/^NOPERM\b/.test(err.message)) return `redis refused a command the store needs (the ACL user's permissions): ${err.message}`
  const code = (err as NodeJS.ErrnoException).code
  if (typeof code === 'string' && /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_|HOSTNAME/.test(code)) {
    return `TLS handshake with redis failed (the server's certificate against store.options.tls): ${code}: ${err.message}`
  }
  return `redis not reachable within ${timeoutMs} ms: ${err.message}`
}

function oldLayoutStuck(): SwitchyardError {
  return new SwitchyardError('INTERNAL', 'the store keeps holding the old whole-state layout ({prefix}:state): is an older version still writing?')
}

function callSafely<A>(listener: (arg: A) => void, arg: A): void {
  try {
    listener(arg)
  } catch (err) {
    // A faulty listener must not stop the others nor break the connection's event loop.
    process.emitWarning(`switchyard store listener threw: ${err instanceof Error ? err.message : String(err)}`)
  }
}

