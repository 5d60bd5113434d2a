/**
 * Holding a store lease over time: the one-driver-per-fleet guarantee (e.g. the rollout driver).
 * The keeper tries to take the lease at once and then renews it every third of its TTL, so a
 * renewal can fail twice before the lease runs out. `held` is judged on the conservative side:
 * from the time a successful renewal was *sent*, plus the TTL, so this process stops believing
 * it holds the lease no later than the store lets it expire — two holders never overlap as
 * long as clocks tick at the same rate.
 */
import type { Logger } from '../log.js'
import type { Store } from '../store/store.js'

export interface LeaseKeeperOptions {
  store: Store
  name: string
  /** who holds it: the instance id */
  holder: string
  ttlMs: number
  log: Logger
  /** Called when the lease is won (true) or lost (false). */
  onChange?: (held: boolean) => void
}

export class LeaseKeeper {
  private validUntil = 0
  private holding = false
  private timer: NodeJS.Timeout | undefined
  private stopped = false
  private busy = false

  constructor(private readonly opts: LeaseKeeperOptions) {}

  /** True while this process may act as the holder. */
  get held(): boolean {
    if (this.holding && performance.now() >= this.validUntil) this.set(false)
    return this.holding
  }

  /**
   * Takes the lease now: resolves with whether this process holds it, rejects when the store
   * cannot be asked. `start()` then keeps it.
   */
  async acquire(): Promise<boolean> {
    await this.take()
    return this.holding
  }

  start(): void {
    void this.renew()
    this.timer = setInterval(() => void this.renew(), Math.max(1, Math.floor(this.opts.ttlMs / 3)))
    this.timer.unref()
  }

  /** Stops renewing; gives the lease up at once (unless `release` is false, as a crash would). */
  async stop(release = true): Promise<void> {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    const was = this.holding
    this.set(false)
    if (release && was) await this.opts.store.releaseLease(this.opts.name, this.opts.holder).catch(() => false)
  }

  private async take(): Promise<void> {
    const sent = performance.now()
    const ok = await this.opts.store.lease(this.opts.name, this.opts.holder, this.opts.ttlMs)
    if (this.stopped) return
    if (ok) this.validUntil = sent + this.opts.ttlMs
    this.set(ok)
  }

  private async renew(): Promise<void> {
    if (this.stopped || this.busy) return
    this.busy = true
    try {
      await this.take()
    } catch (err) {
      // Unreachable store: keep believing only until the last renewal runs out (`held` checks).
      this.opts.log.debug({ err, lease: this.opts.name }, 'lease renewal failed')
      void this.held
    } finally {
      this.busy = false
    }
  }

  private set(held: boolean): void {
    if (held === this.holding) return
    this.holding = held
    this.opts.log.info({ lease: this.opts.name, holder: this.opts.holder }, held ? 'lease acquired' : 'lease lost')
    this.opts.onChange?.(held)
  }
}
