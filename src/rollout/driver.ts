/**
 * The rollout driver: one per fleet. Every instance runs one, but only the holder of the
 * store lease `rollouts` acts (renewed every third of its TTL, see LeaseKeeper); if the holder
 * dies, another instance takes the lease over after at most its TTL and carries on from the
 * records in the state. Each tick, for each rollout in progress, it reads the fleet's figures
 * when an analysis is due and writes the next move (machine.ts) as one audited write with
 * actor `rollout:<id>`; then it sends the webhooks. Nothing here runs on the request path.
 */
import { DEFAULTS } from '../config/defaults.js'
import type { ControlPlane } from '../control/control-plane.js'
import { LeaseKeeper } from '../control/lease.js'
import { SwitchyardError } from '../errors.js'
import type { Logger } from '../log.js'
import type { FleetTelemetry, WindowFigures } from '../telemetry/types.js'
import { analysisDue, intervalOf, isActive, tick as nextMove } from './machine.js'
import { driverMove, NothingToDo, rolloutsOf } from './mutations.js'
import { shadowShare } from './plan.js'
import type { Notifier } from './notify.js'
import type { AnalysisResult, Rollout, ShadowResult, SideFigures } from './schema.js'
import { analyze, analyzeShadow } from './verdict.js'

export interface DriverOptions {
  control: ControlPlane
  telemetry: FleetTelemetry
  notifier: Notifier
  log: Logger
  /** TTL of the `rollouts` lease: a dead driver is replaced within it (default 5000 ms, config `rolloutLeaseMs`) */
  leaseMs?: number | undefined
  /** time between looks at the rollouts (default 250 ms) */
  tickMs?: number | undefined
}

const side = (f: WindowFigures): SideFigures => ({ requests: f.requests, errors: f.errors, errorRate: f.errorRate, p99Ms: f.p99Ms })

export class RolloutDriver {
  readonly lease: LeaseKeeper
  private timer: NodeJS.Timeout | undefined
  private busy = false

  constructor(private readonly opts: DriverOptions) {
    this.lease = new LeaseKeeper({
      store: opts.control.store,
      name: 'rollouts',
      holder: opts.control.instanceId,
      ttlMs: opts.leaseMs ?? DEFAULTS.rolloutLeaseMs,
      log: opts.log,
    })
  }

  /** True while this instance drives the fleet's rollouts. */
  get driving(): boolean {
    return this.lease.held
  }

  start(): void {
    this.lease.start()
    this.timer = setInterval(() => void this.run(), this.opts.tickMs ?? 250)
    this.timer.unref()
  }

  /** Stops driving; `release: false` keeps the lease until its TTL runs out, as a crash would. */
  async stop(release = true): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    await this.lease.stop(release)
  }

  private async run(): Promise<void> {
    if (this.busy || !this.lease.held || !this.opts.control.isReady) return
    this.busy = true
    try {
      for (const r of Object.values(rolloutsOf(this.opts.control.state))) {
        if (!isActive(r)) continue
        if (!this.lease.held) return
        await this.drive(r).catch((err: unknown) => {
          // The store being down is already logged and shown (store_connected); the driver just retries.
          const quiet = err instanceof SwitchyardError && err.code === 'STORE_UNAVAILABLE'
          this.opts.log[quiet ? 'debug' : 'warn']({ err, rollout: r.id }, 'rollout move failed; retrying at the next tick')
        })
      }
    } finally {
      this.busy = false
    }
  }

  /** One look at rollout `r`: analysis when due, then the move, if any. */
  private async drive(r: Rollout): Promise<void> {
    const { control, telemetry, notifier } = this.opts
    const now = Date.now()
    let figures: { to: SideFigures; from: SideFigures; windowMs: number; shadow: ShadowResult | null } | null = null
    const inShadow = (x: Rollout) => shadowShare(x.spec, x.stepIndex) !== undefined
    if (analysisDue(r, now)) {
      const windowMs = intervalOf(r)
      if (inShadow(r)) {
        // A shadow step judges `to`'s answers to the copies, against `from`'s answers to clients.
        const [s, [from]] = await Promise.all([telemetry.shadow(r.route, r.to, windowMs), telemetry.pairs(r.route, [r.from], windowMs)])
        const { compared, mismatches, mismatchRate, skipped, samples } = s
        figures = { to: side(s), from: side(from!), windowMs, shadow: { compared, mismatches, mismatchRate, skipped, samples } }
      } else {
        const [to, from] = await telemetry.pairs(r.route, [r.to, r.from], windowMs)
        figures = { to: side(to!), from: side(from!), windowMs, shadow: null }
      }
    }
    const analysis = (x: Rollout): AnalysisResult | null => {
      // Figures of a shadow step judge only a shadow step (a fresher record may have moved on).
      if (figures === null || !analysisDue(x, now) || inShadow(x) !== (figures.shadow !== null)) return null
      const failures = x.analysis?.failures ?? 0
      const names = { to: x.to, from: x.from }
      const cfg = x.spec.analysis ?? {}
      return figures.shadow === null
        ? analyze(cfg, figures.to, figures.from, failures, now, figures.windowMs, names)
        : analyzeShadow(cfg, figures.to, figures.shadow, figures.from, failures, now, figures.windowMs, names)
    }
    // Most ticks change nothing: decide on the applied state before paying for a write.
    const route = control.state.routes.find((x) => x.name === r.route)
    if (route !== undefined && nextMove(r, route, now, analysis(r)) === null) return
    try {
      const { change } = await control.writer.write(driverMove(r.id, now, analysis), { actor: `rollout:${r.id}` })
      for (const e of change.result.events) {
        this.opts.log[e.event === 'analysis' ? 'debug' : 'info']({ rollout: r.id, event: e.event, weight: change.result.rollout.weight }, `rollout ${r.id}: ${e.message}`)
        notifier.notify(change.result.rollout, e.event, e.message)
      }
    } catch (err) {
      if (!(err instanceof NothingToDo)) throw err
    }
  }
}
