/**
 * Target choice within an upstream: only `active` and healthy targets get new requests
 * (SPEC §4). Least outstanding requests with a rotating start, so ties (the common case at low
 * load) spread round-robin; power-of-two-choices when the upstream asks for it, which keeps
 * O(1) cost for large pools.
 */
import type { CTarget, CUpstream } from './table.js'

function eligible(t: CTarget, tried: readonly CTarget[] | null): boolean {
  return t.rt.healthy && (tried === null || !tried.includes(t))
}

export function pickTarget(u: CUpstream, tried: readonly CTarget[] | null): CTarget | undefined {
  const list = u.active
  const n = list.length
  if (n === 0) return undefined
  if (u.p2c && n > 2) return pickTwo(list, tried)
  const start = u.counters.cursor++ % n
  let best: CTarget | undefined
  for (let k = 0; k < n; k++) {
    const t = list[(start + k) % n]!
    if (!eligible(t, tried)) continue
    if (best === undefined || t.rt.inflight < best.rt.inflight) best = t
  }
  return best
}

function pickTwo(list: readonly CTarget[], tried: readonly CTarget[] | null): CTarget | undefined {
  const n = list.length
  const a = list[(Math.random() * n) | 0]!
  const b = list[(Math.random() * n) | 0]!
  const okA = eligible(a, tried)
  const okB = eligible(b, tried)
  if (okA && okB) return a.rt.inflight <= b.rt.inflight ? a : b
  if (okA) return a
  if (okB) return b
  // Both draws were out: fall back to a scan so a healthy target is never missed.
  for (const t of list) if (eligible(t, tried)) return t
  return undefined
}
