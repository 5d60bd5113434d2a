/**
 * The Redis store's two connections (redis.ts): `cmd` runs commands and scripts, `sub` only
 * listens on the changes channel (a subscribed connection can run nothing else).
 *
 * Failure model: while Redis is down the store fails fast instead of queueing — the proxy
 * keeps serving its last applied state and an admin write must answer 503 at once:
 * - `enableOfflineQueue: false`: a command issued while the connection is not ready is
 *   rejected immediately (the store also checks `status` first, so it never even gets queued);
 * - `commandTimeout: 1500`: a command on a connection that is open but silent (a stopped
 *   or partitioned Redis, no RST) is rejected after 1.5 s, and the connection is recycled
 *   so `connected` turns false instead of staying true on a dead socket;
 * - `maxRetriesPerRequest: 1`: a command in flight when the socket closes is rejected when
 *   the first reconnect attempt fails (~50 ms later when the port refuses) unless Redis is
 *   back by then, in which case ioredis resends it — safe for the commit script, whose
 *   revision check turns a replay of an applied commit into a mismatch, never a double write;
 * - `connectTimeout: 2000` bounds each TCP connect; `retryStrategy` reconnects forever
 *   with a backoff capped at 500 ms so a restarted Redis is picked up within half a second.
 *
 * After any outage (either connection) RedisConnections waits until `cmd` is ready and `sub`
 * has re-subscribed, then calls `onResync`: messages may have been missed, or Redis may have
 * restarted empty, so the control plane must reload (and maybe re-seed).
 */
import { Cluster, Redis } from 'ioredis'
import type { ClusterNode, ClusterOptions, RedisOptions } from 'ioredis'
import type { StoreKeys } from './keys.js'
import type { RedisStoreOptions } from './redis.js'

/** A plain or a Cluster ioredis client; the store uses only what both offer. */
export type RedisClient = Redis | Cluster

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

/** What RedisConnections reports to its store. */
export interface ConnectionEvents {
  /** `cmd` became ready (true) or stopped being ready (false). */
  onConnectionChange(connected: boolean): void
  /** Both connections are back after an outage: changes may have been missed, reload. */
  onResync(): void
}

/**
 * The `cmd` and `sub` connections of one store, their readiness and the subscription to
 * `keys.changes`. Nothing connects before `open()`; after `close()` nothing reconnects.
 */
export class RedisConnections {
  readonly cmd: RedisClient
  readonly sub: RedisClient
  /** Called after every connection event; open() waits through it. */
  private readonly waiters = new Set<() => void>()
  private isConnected = false
  private subscribed = false
  private subscribing = false
  private opened = false
  private outage = false
  private isClosed = false
  private error: Error | null = null

  constructor(
    options: RedisStoreOptions,
    private readonly keys: StoreKeys,
    private readonly events: ConnectionEvents,
  ) {
    this.cmd = createClient(options, `switchyard:${this.keys.prefix}:cmd`)
    this.sub = createClient(options, `switchyard:${this.keys.prefix}:sub`)
    this.watch(this.cmd)
    this.watch(this.sub)
  }

  /** True while `cmd` is ready. */
  get connected(): boolean {
    return this.isConnected
  }

  /** True once close() was called; then nothing reconnects and no event is reported. */
  get closed(): boolean {
    return this.isClosed
  }

  /** The last error either connection reported; the cause of a STORE_UNAVAILABLE. */
  get lastError(): Error | null {
    return this.error
  }

  /** Connects both and resolves true once `cmd` is ready and `sub` subscribed, false after `timeoutMs`. */
  async open(timeoutMs: number): Promise<boolean> {
    if (this.opened) return true
    for (const client of [this.cmd, this.sub]) if (client.status === 'wait') client.connect().catch(noop)
    const up = await this.until(() => this.isConnected && this.subscribed, timeoutMs)
    if (up) this.opened = true
    return up
  }

  /** Quits both connections (or drops them when Redis is down); leaves no socket or reconnect timer. */
  async close(): Promise<void> {
    if (this.isClosed) return
    this.isClosed = true
    this.isConnected = false
    await Promise.all([shutdown(this.cmd), shutdown(this.sub)])
  }

  private watch(client: RedisClient): void {
    // Without an 'error' listener ioredis logs every failed reconnect; failures reach
    // callers through `connected` and STORE_UNAVAILABLE instead.
    client.on('error', (err: Error) => {
      this.error = err
    })
    for (const event of ['ready', 'close', 'end', 'reconnecting']) client.on(event, () => this.update())
  }

  /** Re-derives `connected`, the subscription and the outage flag from both connections' status. */
  private update(): void {
    if (this.isClosed) return
    const cmdReady = this.cmd.status === 'ready'
    if (this.sub.status !== 'ready') this.subscribed = false
    else if (!this.subscribed) this.resubscribe()
    if (this.opened && (!cmdReady || !this.subscribed)) this.outage = true
    if (cmdReady !== this.isConnected) {
      this.isConnected = cmdReady
      this.events.onConnectionChange(cmdReady)
    }
    if (this.outage && cmdReady && this.subscribed) {
      this.outage = false
      this.events.onResync()
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
        if (err instanceof Error) this.error = err
        // Still "ready" but the subscribe failed (timed out): reconnect and try again.
        if (!this.isClosed && this.sub.status === 'ready') this.sub.disconnect(true)
      },
    )
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

function createClient(options: RedisStoreOptions, connectionName: string): RedisClient {
  const { clusterNodes, ...user } = options.options ?? {}
  if (Array.isArray(clusterNodes)) {
    const userRedisOptions = (user.redisOptions ?? {}) as RedisOptions
    const clusterOptions: ClusterOptions = {
      // The offline queue stays on: Cluster's own ready check goes through it. Commands
      // still never queue, because the store's call() refuses them unless the client is ready.
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
async function shutdown(client: RedisClient): Promise<void> {
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

function noop(): void {}
