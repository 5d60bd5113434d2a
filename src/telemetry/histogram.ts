/**
 * Percentiles from the data plane's latency histogram (LATENCY_BOUNDS_MS: bucket 0 holds
 * times up to 0.1 ms, bucket i those in (bound[i-1], bound[i]], the last one everything above
 * its lower bound). A percentile is interpolated linearly inside its bucket, so its error is
 * at most one bucket's width (20 to 33 % of the value).
 */
import { LATENCY_BOUNDS_MS } from '../dataplane/stats.js'

/** The `q`-quantile (0 < q <= 1) of `counts` in ms, or null when they hold no request. */
export function percentile(counts: ArrayLike<number>, q: number): number | null {
  let total = 0
  for (let i = 0; i < counts.length; i++) total += counts[i]!
  if (total === 0) return null
  const rank = q * total
  let seen = 0
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i]!
    if (c === 0) continue
    if (seen + c >= rank) {
      const lower = i === 0 ? 0 : LATENCY_BOUNDS_MS[i - 1]!
      const upper = LATENCY_BOUNDS_MS[i]!
      return lower + ((upper - lower) * (rank - seen)) / c
    }
    seen += c
  }
  return LATENCY_BOUNDS_MS[counts.length - 1] ?? null
}

/** Adds `from` into `into` (lengths may differ: trailing zero buckets are cut in transit). */
export function addInto(into: number[], from: ArrayLike<number>): void {
  for (let i = 0; i < from.length; i++) into[i] = (into[i] ?? 0) + from[i]!
}

/** `counts` without its trailing zeros (what a sample carries). */
export function trimmed(counts: ArrayLike<number>): number[] {
  let end = counts.length
  while (end > 0 && counts[end - 1] === 0) end--
  return Array.from({ length: end }, (_, i) => counts[i]!)
}
