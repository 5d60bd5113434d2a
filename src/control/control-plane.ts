/**
 * The control plane of one proxy instance, put together from its pieces:
 * - `follower` (follower.ts): store → compile → swap, and the divergence signal;
 * - `writer` (writer.ts): revisioned, audited writes of pure mutations (mutations.ts);
 * - `fleet` (fleet.ts): the instance registry, waitApplied, fleet-wide in-flight;
 * - `telemetry`: this instance's traffic figures published each second, and the fleet's sums
 *   over a window (telemetry/), which the rollout analysis and `GET /api/stats` read.
 * The admin API and the rollout driver use these pieces; nothing else talks to the store.
 */
import type { State } from '../config/schema.js'
import type { Dataplane } from '../dataplane/server.js'
import type { Logger } from '../log.js'
import type { Store } from '../store/store.js'
import { Aggregator } from '../telemetry/aggregator.js'
import { TelemetryPublisher } from '../telemetry/publisher.js'
import type { FleetTelemetry } from '../telemetry/types.js'
import { Fleet } from './fleet.js'
import { Follower } from './follower.js'
import type { Mutation } from './mutations.js'
import { Writer, type WriteOptions, type Written } from './writer.js'

export type { WriteOptions } from './writer.js'
export type { Change, Mutation } from './mutations.js'

export interface ControlPlaneOptions {
  store: Store
  dataplane: Dataplane
  /** The config file's state; seeds an empty store. */
  seed: State
  log: Logger
  /** Interval of the periodic re-read of the store's revision (self-healing). */
  resyncMs?: number | undefined
  /** Registry heartbeat and TTL. */
  heartbeatMs?: number | undefined
  instanceTtlMs?: number | undefined
  /** How long an instance may stay behind the store before it is reported. */
  behindAlertMs?: number | undefined
  /** How often this instance publishes its traffic figures (default 1000 ms). */
  telemetryMs?: number | undefined
  /** How long a start on an empty store waits for a running fleet to re-seed it (Follower). */
  seedWaitMs?: number | undefined
}

export class ControlPlane {
  readonly follower: Follower
  readonly writer: Writer
  readonly fleet: Fleet
  readonly telemetry: FleetTelemetry
  private readonly publisher: TelemetryPublisher

  constructor(private readonly opts: ControlPlaneOptions) {
    this.follower = new Follower({
      store: opts.store,
      dataplane: opts.dataplane,
      seed: opts.seed,
      log: opts.log,
      resyncMs: opts.resyncMs,
      behindAlertMs: opts.behindAlertMs,
      seedWaitMs: opts.seedWaitMs,
    })
    this.writer = new Writer(opts.store, this.follower, opts.log)
    this.fleet = new Fleet({
      store: opts.store,
      dataplane: opts.dataplane,
      follower: this.follower,
      heartbeatMs: opts.heartbeatMs,
      instanceTtlMs: opts.instanceTtlMs,
      behindAlertMs: opts.behindAlertMs,
    })
    this.telemetry = new Aggregator(opts.store)
    this.publisher = new TelemetryPublisher({
      store: opts.store,
      resources: opts.dataplane.resources,
      instanceId: this.fleet.instanceId,
      log: opts.log,
      periodMs: opts.telemetryMs,
    })
  }

  get store(): Store {
    return this.opts.store
  }

  get log(): Logger {
    return this.opts.log
  }

  get instanceId(): string {
    return this.fleet.instanceId
  }

  /** The state this instance applied (`GET /api/state` shows this copy, not the store's). */
  get state(): State {
    return this.follower.state
  }

  get isReady(): boolean {
    return this.follower.isReady
  }

  async start(): Promise<void> {
    await this.follower.start()
    await this.fleet.start()
    this.publisher.start()
  }

  /** A revisioned, audited write (see Writer.write). */
  write<T>(mutation: Mutation<T>, opts: WriteOptions): Promise<Written<T>> {
    return this.writer.write(mutation, opts)
  }

  async close(): Promise<void> {
    this.publisher.stop()
    this.follower.close()
    await this.fleet.close()
  }
}
