/**
 * Target choice within an upstream: only `active` targets that are healthy and not ejected get
 * new requests. Least outstanding requests with a rotating start, so ties (the common
 * case at low load) spread round-robin; power-of-two-choices when the upstream asks for it,
 * which keeps O(1) cost for large pools.
 *
 * Slow start: a target that joined or came back less than `slowStartMs` ago is passed over with
 * probability 1 − factor, factor growing linearly from SLOW_START_MIN_FACTOR to 1 over the
 * window (Envoy's linear ramp with its 10 % minimum). A skip rather than a weight, because at
 * low load every in-flight count is 0 and the rotating start alone would hand a newcomer its full
 * share. The clock is read only while a ramp of the upstream is under way.
 */
import type { CTarget, CUpstream } from './table.js'

/** A ramping target gets at least this fraction of its full share (Envoy's min_weight_percent). */
export const SLOW_START_MIN_FACTOR = 0.1

/** `now` < 0: no ramp to apply. */
function usable(t: CTarget, tried: readonly CTarget[] | null, now: number, windowMs: number): boolean {
  return t.rt.available && (tried === null || !tried.includes(t)) && (now < 0 || !heldBack(t, now, windowMs))
}

/** Whether a ramping target sits this pick out; draws a random number only while it ramps. */
function heldBack(t: CTarget, now: number, windowMs: number): boolean {
  const rt = t.rt
  if (rt.rampStart < 0) return false
  const factor = (now - rt.rampStart) / windowMs
  if (factor >= 1) {
    rt.rampStart = -1
    return false
  }
  return Math.random() >= (factor > SLOW_START_MIN_FACTOR ? factor : SLOW_START_MIN_FACTOR)
}

export function pickTarget(u: CUpstream, tried: readonly CTarget[] | null): CTarget | undefined {
  if (u.slowStartMs > 0 && u.counters.lastRampStart >= 0) return pickRamping(u, tried)
  return pick(u, tried, -1)
}

function pickRamping(u: CUpstream, tried: readonly CTarget[] | null): CTarget | undefined {
  const now = performance.now()
  if (now - u.counters.lastRampStart >= u.slowStartMs) {
    // The latest ramp is over, so every ramp is: back to the clock-free path.
    u.counters.lastRampStart = -1
    return pick(u, tried, -1)
  }
  // Every usable target sat this pick out: take one anyway rather than refuse the request.
  return pick(u, tried, now) ?? pick(u, tried, -1)
}

function pick(u: CUpstream, tried: readonly CTarget[] | null, now: number): CTarget | undefined {
  const list = u.active
  const n = list.length
  if (n === 0) return undefined
  if (u.p2c && n > 2) return pickTwo(u, tried, now)
  return leastRequest(u, tried, now)
}

function leastRequest(u: CUpstream, tried: readonly CTarget[] | null, now: number): CTarget | undefined {
  const list = u.active
  const n = list.length
  const start = u.counters.cursor++ % n
  let best: CTarget | undefined
  for (let k = 0; k < n; k++) {
    const t = list[(start + k) % n]!
    if (!usable(t, tried, now, u.slowStartMs)) continue
    if (best === undefined || t.rt.inflight < best.rt.inflight) best = t
  }
  return best
}

function pickTwo(u: CUpstream, tried: readonly CTarget[] | null, now: number): CTarget | undefined {
  const list = u.active
  const n = list.length
  const a = list[(Math.random() * n) | 0]!
  const b = list[(Math.random() * n) | 0]!
  const okA = usable(a, tried, now, u.slowStartMs)
  const okB = usable(b, tried, now, u.slowStartMs)
  if (okA && okB) return a.rt.inflight <= b.rt.inflight ? a : b
  if (okA) return a
  if (okB) return b
  // Both draws were out: scan so a usable target is never missed.
  return leastRequest(u, tried, now)
}
