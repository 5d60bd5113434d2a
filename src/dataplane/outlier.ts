/**
 * Passive outlier detection, after Envoy's `consecutive_5xx` and `consecutive_gateway_failure`:
 * every answer from a target moves two counters (errors in a row, gateway failures in a row);
 * when one reaches its threshold the target is ejected — it gets no new request — for
 * `baseEjectionMs × ejections in a row` (at most `maxEjectionMs`), then comes back by itself.
 *
 * - A success costs two integer stores; only an ejection reads the clock or sets a timer.
 * - At most `maxEjectionPercent` of an upstream's active targets are out at once, strictly: a
 *   detection that would exceed it is dropped (and its counters reset, as in Envoy). So an
 *   upstream of one target is never ejected below 100 %: there is nowhere else to send its
 *   traffic, and an ejection would only turn the upstream's own answers into 503s.
 * - The multiplier decays by one for each `baseEjectionMs` the target stays in after a return
 *   (Envoy decrements it on each interval the host is not ejected), so a target that failed
 *   once long ago starts again from the base time.
 */
import { DEFAULTS } from '../config/defaults.js'
import type { OutlierDetection } from '../config/schema.js'
import { publishEjected, publishReturned } from './events.js'
import type { EjectionReason, TargetRuntime } from './stats.js'
import type { CUpstream } from './table.js'
import type { Fault } from './upstream-error.js'

/** An upstream's outlier detection with every default filled in. */
export interface OutlierPolicy {
  readonly consecutive5xx: number
  readonly consecutiveGatewayFailure: number
  readonly baseEjectionMs: number
  readonly maxEjectionMs: number
  readonly maxEjectionPercent: number
}

/** The upstream's policy, or null when outlier detection is off (no `outlierDetection` key). */
export function outlierPolicy(spec: OutlierDetection | undefined): OutlierPolicy | null {
  if (spec === undefined) return null
  return Object.freeze({ ...DEFAULTS.outlierDetection, ...spec })
}

/** One answer of `rt` (the status it sent). On the request path: keep it this small. */
export function recordResponse(u: CUpstream, rt: TargetRuntime, status: number): void {
  if (status < 500) {
    rt.consecutive5xx = 0
    rt.consecutiveGateway = 0
  } else recordFailure(u, rt, status === 502 || status === 503 || status === 504)
}

/**
 * An attempt that failed without an answer. Connect failures, resets and timeouts are the
 * target's (gateway failures, like the 502/504 the proxy answers for them); a pool closed by a
 * table swap, or anything caused by the client's request, is not, and counts nothing.
 */
export function recordFault(u: CUpstream, rt: TargetRuntime, fault: Fault): void {
  if (fault === 'connect' || fault === 'reset' || fault === 'headers-timeout') recordFailure(u, rt, true)
}

/** A 5xx answer (or a failure counted as one); `gateway` for 502/503/504 and transport failures. */
export function recordFailure(u: CUpstream, rt: TargetRuntime, gateway: boolean): void {
  const p = u.outlier
  if (p === null) return
  rt.consecutive5xx++
  if (gateway) rt.consecutiveGateway++
  else rt.consecutiveGateway = 0
  if (p.consecutiveGatewayFailure > 0 && rt.consecutiveGateway >= p.consecutiveGatewayFailure) {
    detected(u, rt, p, 'consecutive_gateway_failure', rt.consecutiveGateway)
  } else if (p.consecutive5xx > 0 && rt.consecutive5xx >= p.consecutive5xx) {
    detected(u, rt, p, 'consecutive_5xx', rt.consecutive5xx)
  }
}

function detected(u: CUpstream, rt: TargetRuntime, p: OutlierPolicy, reason: EjectionReason, consecutive: number): void {
  // Reset whatever happens next, so a refused detection needs a full new run of failures.
  rt.consecutive5xx = 0
  rt.consecutiveGateway = 0
  if (rt.ejected) return
  let mine = false
  let out = 0
  for (const t of u.active) {
    if (t.rt === rt) mine = true
    if (t.rt.ejected) out++
  }
  // A draining or disabled target gets no new request anyway.
  if (!mine) return
  if ((out + 1) * 100 > p.maxEjectionPercent * u.active.length) return
  eject(rt, p, reason, consecutive)
}

/** The ejection level (multiplier) after one more ejection, `sinceReturnMs` after the last return. */
export function nextEjectionLevel(level: number, sinceReturnMs: number, p: OutlierPolicy): number {
  const decayed = Math.max(0, level - Math.floor(sinceReturnMs / p.baseEjectionMs))
  // No point growing past the cap: the multiplier would only take longer to decay.
  return Math.min(decayed + 1, Math.ceil(ejectionCapMs(p) / p.baseEjectionMs))
}

/** How long an ejection at `level` lasts. */
export function ejectionMs(level: number, p: OutlierPolicy): number {
  return Math.min(p.baseEjectionMs * level, ejectionCapMs(p))
}

/** Like Envoy, the cap is never below the base time. */
function ejectionCapMs(p: OutlierPolicy): number {
  return Math.max(p.maxEjectionMs, p.baseEjectionMs)
}

function eject(rt: TargetRuntime, p: OutlierPolicy, reason: EjectionReason, consecutive: number): void {
  const now = Date.now()
  rt.ejectionLevel = nextEjectionLevel(rt.ejectionLevel, rt.returnedAt === 0 ? 0 : now - rt.returnedAt, p)
  const durationMs = ejectionMs(rt.ejectionLevel, p)
  rt.ejected = true
  rt.available = false
  rt.ejectedSince = now
  rt.ejectedUntil = now + durationMs
  rt.ejectDetail = `${consecutive} consecutive ${reason === 'consecutive_5xx' ? '5xx' : 'gateway failures'}`
  rt.ejections[reason]++
  rt.ejectionTimer = setTimeout(() => release(rt), durationMs)
  rt.ejectionTimer.unref()
  publishEjected({
    scope: rt.counters.scope,
    upstream: rt.upstream,
    target: rt.id,
    reason,
    consecutive,
    durationMs,
    until: rt.ejectedUntil,
    level: rt.ejectionLevel,
  })
}

/**
 * Ends an ejection (its time ran out, or the upstream no longer has outlier detection): the
 * target is back, and ramps up again when the upstream has a slow start.
 */
export function release(rt: TargetRuntime): void {
  if (!rt.ejected) return
  if (rt.ejectionTimer) clearTimeout(rt.ejectionTimer)
  rt.ejectionTimer = undefined
  const now = Date.now()
  const ejectedMs = now - rt.ejectedSince
  rt.ejected = false
  rt.available = rt.healthy
  rt.returnedAt = now
  rt.startRamp()
  publishReturned({ scope: rt.counters.scope, upstream: rt.upstream, target: rt.id, ejectedMs })
}
