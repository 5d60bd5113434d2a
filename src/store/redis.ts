/**
 * The Redis store: one state shared by a fleet of proxy instances (SPEC §7).
 *
 * Two connections: `cmd` runs commands and scripts, `sub` only listens on the changes
 * channel (a subscribed connection can run nothing else). Every multi-key write is one Lua
 * script, so it is atomic and revision-checked on the server; all keys share one hash tag
 * (see keys.ts) so the scripts also run on Redis Cluster.
 *
 * Failure model: while Redis is down the store fails fast instead of queueing — the proxy
 * keeps serving its last applied state and an admin write must answer 503 at once:
 * - `enableOfflineQueue: false`: a command issued while the connection is not ready is
 *   rejected immediately (we also check `status` first, so it never even gets queued);
 * - `commandTimeout: 1500`: a command on a connection that is open but silent (a stopped
 *   or partitioned Redis, no RST) is rejected after 1.5 s, and the connection is recycled
 *   so `connected` turns false instead of staying true on a dead socket;
 * - `maxRetriesPerRequest: 1`: a command in flight when the socket closes is rejected when
 *   the first reconnect attempt fails (~50 ms later when the port refuses) unless Redis is
 *   back by then, in which case ioredis resends it — safe for the commit script, whose
 *   revision check turns a replay of an applied commit into a mismatch, never a double write;
 * - `connectTimeout: 2000` bounds each TCP connect; `retryStrategy` reconnects forever
 *   with a backoff capped at 500 ms so a restarted Redis is picked up within half a second.
 * Every failure surfaces as SwitchyardError('STORE_UNAVAILABLE') with the cause attached.
 *
 * After any outage (either connection) the store waits until `cmd` is ready and `sub` has
 * re-subscribed, then calls every onChange listener with -1: messages may have been missed,
 * or Redis may have restarted empty, so the control plane must reload (and maybe re-seed).
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { Cluster, Redis } from 'ioredis'
import type { ClusterNode, ClusterOptions, RedisOptions } from 'ioredis'
import type { State } from '../config/schema.js'
import { DEFAULTS } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { EVENTS_CAP, storeKeys } from './keys.js'
import type { StoreKeys } from './keys.js'
import type { AuditEvent, CommitResult, InstanceInfo, Store } from './store.js'

export interface RedisStoreOptions {
  /** `redis://` or `rediss://` URL; without it ioredis defaults (or Sentinel options) apply. */
  url?: string
  /** Key prefix shared by the fleet; default `switchyard`. */
  prefix?: string
  /**
   * Passed to ioredis as they are and win over CONNECTION_DEFAULTS (Sentinel: `sentinels`,
   * `name`; TLS: `tls`; ...). One addition: `clusterNodes: [...]` makes a Redis Cluster
   * client (ioredis `Cluster`), the remaining options being its ClusterOptions (per-node
   * settings in `redisOptions`).
   */
  options?: Record<string, unknown>
  /** How long `open()` waits for Redis before rejecting. Default 3000 ms. */
  openTimeoutMs?: number
}

type Client = Redis | Cluster

const OPEN_TIMEOUT_MS = 3_000 // within the 5 s a start-up may wait, and > one connectTimeout
const CLOSE_TIMEOUT_MS = 1_000 // longest close() waits for a socket to finish closing

/** Per-connection defaults; see the failure model above. */
const CONNECTION_DEFAULTS = {
  connectTimeout: 2_000,
  commandTimeout: 1_500,
  maxRetriesPerRequest: 1,
  // ioredis ends a socket gracefully and destroys it after this; its timer outlives
  // close() by that much, so keep it short.
  disconnectTimeout: 200,
} as const

/** Reconnect backoff: 50 ms, 100 ms, ... capped at 500 ms, forever. */
const backoff = (times: number): number => Math.min(times * 50, 500)

export class RedisStore implements Store {
  readonly kind = 'redis' as const
  readonly keys: StoreKeys
  private readonly cmd: Client
  private readonly sub: Client
  private readonly openTimeoutMs: number
  private readonly changeListeners = new Set<(revision: number) => void>()
  private readonly connectionListeners = new Set<(connected: boolean) => void>()
  /** Called after every connection event; open() waits through it. */
  private readonly waiters = new Set<() => void>()
  private isConnected = false
  private subscribed = false
  private subscribing = false
  private opened = false
  private outage = false
  private closed = false
  private lastError: Error | null = null

  constructor(options: RedisStoreOptions = {}) {
    this.keys = storeKeys(options.prefix ?? DEFAULTS.redisPrefix)
    this.openTimeoutMs = options.openTimeoutMs ?? OPEN_TIMEOUT_MS
    this.cmd = createClient(options, `switchyard:${this.keys.prefix}:cmd`)
    this.sub = createClient(options, `switchyard:${this.keys.prefix}:sub`)
    this.watch(this.cmd)
    this.watch(this.sub)
    this.sub.on('message', (channel: string, message: string) => {
      const revision = Number(message)
      if (channel === this.keys.changes && Number.isInteger(revision)) this.emitChange(revision)
    })
  }

  /** True while the command connection is ready, i.e. while reads and writes can succeed. */
  get connected(): boolean {
    return this.isConnected
  }

  /**
   * Connects both connections and subscribes. Rejects with STORE_UNAVAILABLE when that has
   * not happened within `openTimeoutMs` (3 s); the store is then closed, so no timer or
   * socket is left behind. To try again, make a new RedisStore.
   */
  async open(): Promise<void> {
    if (this.closed) throw unavailable('the redis store is closed')
    if (this.opened) return
    for (const client of [this.cmd, this.sub]) if (client.status === 'wait') client.connect().catch(noop)
    const up = await this.until(() => this.isConnected && this.subscribed, this.openTimeoutMs)
    if (!up) {
      const why = this.lastError === null ? '' : `: ${this.lastError.message}`
      const err = unavailable(`redis not reachable within ${this.openTimeoutMs} ms${why}`, this.lastError)
      await this.close()
      throw err
    }
    this.opened = true
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
   * so an instance that knows a state re-seeds it before writing (SPEC §8 "Empty Redis").
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

  /** Quits both connections (or drops them when Redis is down); leaves no socket or reconnect timer. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.changeListeners.clear()
    this.connectionListeners.clear()
    this.isConnected = false
    await Promise.all([shutdown(this.cmd), shutdown(this.sub)])
  }

  /** Runs one Redis call, failing fast while disconnected and mapping every failure to STORE_UNAVAILABLE. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw unavailable('the redis store is closed')
    if (this.cmd.status !== 'ready') throw unavailable(`redis is not connected (${this.cmd.status})`, this.lastError)
    try {
      return await fn()
    } catch (err) {
      // An open socket that stopped answering means a hung or unreachable server: recycle
      // both connections so `connected` reflects it and the subscriber is not left on a
      // dead socket (the reconnect then re-subscribes and triggers the -1 reload).
      if (err instanceof Error && err.message === 'Command timed out') {
        this.cmd.disconnect(true)
        this.sub.disconnect(true)
      }
      throw unavailable(`redis: ${err instanceof Error ? err.message : String(err)}`, err)
    }
  }

  private watch(client: Client): void {
    // Without an 'error' listener ioredis logs every failed reconnect; failures reach
    // callers through `connected` and STORE_UNAVAILABLE instead.
    client.on('error', (err: Error) => {
      this.lastError = err
    })
    for (const event of ['ready', 'close', 'end', 'reconnecting']) client.on(event, () => this.update())
  }

  /** Re-derives `connected`, the subscription and the outage flag from both connections' status. */
  private update(): void {
    if (this.closed) return
    const cmdReady = this.cmd.status === 'ready'
    if (this.sub.status !== 'ready') this.subscribed = false
    else if (!this.subscribed) this.resubscribe()
    if (this.opened && (!cmdReady || !this.subscribed)) this.outage = true
    if (cmdReady !== this.isConnected) {
      this.isConnected = cmdReady
      for (const listener of this.connectionListeners) callSafely(listener, cmdReady)
    }
    if (this.outage && cmdReady && this.subscribed) {
      this.outage = false
      this.emitChange(-1)
    }
    for (const waiter of this.waiters) waiter()
  }

  /**
   * ioredis re-subscribes by itself on reconnect (autoResubscribe); subscribing again is
   * idempotent and its reply tells us the subscription is in place, since Redis answers
   * in order. Only then is a message no longer missable and a reload worth doing.
   */
  private resubscribe(): void {
    if (this.subscribing) return
    this.subscribing = true
    this.sub.subscribe(this.keys.changes).then(
      () => {
        this.subscribing = false
        this.subscribed = this.sub.status === 'ready'
        this.update()
      },
      (err: unknown) => {
        this.subscribing = false
        if (err instanceof Error) this.lastError = err
        // Still "ready" but the subscribe failed (timed out): reconnect and try again.
        if (!this.closed && this.sub.status === 'ready') this.sub.disconnect(true)
      },
    )
  }

  private emitChange(revision: number): void {
    if (this.closed) return
    for (const listener of this.changeListeners) callSafely(listener, revision)
  }

  /** Resolves true once `ready()` holds, false at the deadline; clears its timer either way. */
  private until(ready: () => boolean, timeoutMs: number): Promise<boolean> {
    if (ready()) return Promise.resolve(true)
    return new Promise((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(timer)
        this.waiters.delete(check)
        resolve(ok)
      }
      const check = (): void => {
        if (ready()) done(true)
      }
      const timer = setTimeout(() => done(false), timeoutMs)
      this.waiters.add(check)
    })
  }
}

/**
 * A Lua script run with EVALSHA, falling back to EVAL when the server does not know it
 * yet (after a restart or on another Cluster node); EVAL caches it for the next call.
 */
class LuaScript {
  readonly sha: string
  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex')
  }

  async run(client: Client, keys: string[], args: Array<string | number>): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args)
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err
      return await client.eval(this.source, keys.length, ...keys, ...args)
    }
  }
}

/**
 * KEYS: state, revision, events. ARGV: expected, next revision, state JSON, event JSON,
 * events cap, channel. Returns {1, rev} written, {0, current} mismatch, {-1} empty.
 */
const COMMIT = new LuaScript(`
local current = redis.call('GET', KEYS[2])
local expected = tonumber(ARGV[1])
if current == false then
  if expected ~= 0 then return {-1} end
elseif tonumber(current) ~= expected then
  return {0, tonumber(current)}
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('LPUSH', KEYS[3], ARGV[4])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
redis.call('PUBLISH', ARGV[6], ARGV[2])
return {1, tonumber(ARGV[2])}
`)

/** KEYS: state, revision. ARGV: revision, state JSON, channel. Returns 1 when it wrote. */
const SEED = new LuaScript(`
local current = redis.call('GET', KEYS[2])
if current ~= false and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
`)

/** KEYS: index, instance key. ARGV: id, info JSON, ttl ms. */
const REGISTER = new LuaScript(`
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[1], ARGV[1])
return 1
`)

/**
 * KEYS: index. ARGV: instance key prefix. Returns the JSON of every live instance and
 * drops expired ids from the index. The instance keys are derived, not declared, but
 * share the index's hash tag, so they are in the same slot (and on the same node).
 */
const INSTANCES = new LuaScript(`
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local json = redis.call('GET', ARGV[1] .. id)
  if json then out[#out + 1] = json else redis.call('SREM', KEYS[1], id) end
end
return out
`)

function createClient(options: RedisStoreOptions, connectionName: string): Client {
  const { clusterNodes, ...user } = options.options ?? {}
  if (Array.isArray(clusterNodes)) {
    const userRedisOptions = (user.redisOptions ?? {}) as RedisOptions
    const clusterOptions: ClusterOptions = {
      // The offline queue stays on: Cluster's own ready check goes through it. Commands
      // still never queue, because call() refuses them unless the client is ready.
      clusterRetryStrategy: backoff,
      ...(user as ClusterOptions),
      lazyConnect: true,
      redisOptions: { ...CONNECTION_DEFAULTS, connectionName, ...userRedisOptions },
    }
    return new Cluster(clusterNodes as ClusterNode[], clusterOptions)
  }
  const redisOptions: RedisOptions = {
    ...CONNECTION_DEFAULTS,
    enableOfflineQueue: false,
    retryStrategy: backoff,
    connectionName,
    ...(user as RedisOptions),
    lazyConnect: true, // open() decides when to connect and how long to wait
  }
  return options.url === undefined ? new Redis(redisOptions) : new Redis(options.url, redisOptions)
}

/** Quits gracefully when connected, else drops the socket and any reconnect timer. */
async function shutdown(client: Client): Promise<void> {
  const status = client.status
  if (status === 'end') return
  if (status !== 'connecting' && status !== 'connect' && status !== 'ready') {
    // Between reconnect attempts there is no socket: disconnect() just clears the timer.
    client.disconnect()
    return
  }
  const ended = new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      client.disconnect()
      resolve()
    }, CLOSE_TIMEOUT_MS)
    client.once('end', () => {
      clearTimeout(timer)
      resolve()
    })
  })
  if (status === 'ready') await client.quit().catch(() => client.disconnect())
  else client.disconnect()
  await ended
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

function noop(): void {}
