/**
 * Deterministic user bucketing, shared by sticky routing and feature flags.
 *
 * `unitHash(key, seed)` maps a user key to a number in [0, 1) that is independent for each
 * seed (one seed per upstream, one per flag). Sticky routing uses weighted rendezvous hashing
 * over those numbers: when an upstream's weight grows, its score grows for every user and the
 * others' scores stay, so users only ever move *to* the growing upstream ("monotonic
 * bucketing"), whatever the order or number of upstreams in the split. Flags use the same
 * number: a user is in the flag iff unitHash < percent/100, so raising the percentage only adds
 * users.
 */

/** FNV-1a over UTF-16 code units; cheap, and the murmur finalizer below fixes its weak avalanche. */
export function hashKey(key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** murmur3 fmix32: a bijection with full avalanche, so `h ^ seed` gives independent outputs per seed. */
function fmix32(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** A seed for a name (an upstream or a flag), so bucketing is stable across restarts and instances. */
export function seedOf(name: string): number {
  return fmix32(hashKey(name) ^ 0x9e3779b9)
}

/** A number in (0, 1): never 0, so `-Math.log(u)` below is finite. */
export function unit(keyHash: number, seed: number): number {
  return (fmix32(keyHash ^ seed) + 0.5) / 4294967296
}

/** [0, 1) bucket of a key for a seed; used by flags. */
export function unitHash(key: string, seed: number): number {
  return unit(hashKey(key), seed)
}

/**
 * Weighted rendezvous choice: the index i with the smallest -ln(u_i)/w_i (an exponential race,
 * so P(i) = w_i / Σw). Weight-0 entries never win. Returns -1 when all weights are 0.
 */
export function rendezvous(keyHash: number, seeds: readonly number[], weights: readonly number[]): number {
  let best = -1
  let bestScore = Infinity
  for (let i = 0; i < seeds.length; i++) {
    const w = weights[i]!
    if (w <= 0) continue
    const score = -Math.log(unit(keyHash, seeds[i]!)) / w
    if (score < bestScore) {
      bestScore = score
      best = i
    }
  }
  return best
}

/** Per-request weighted random choice (no sticky key). `total` is Σweights > 0. */
export function weightedRandom(weights: readonly number[], total: number): number {
  let r = Math.random() * total
  for (let i = 0; i < weights.length; i++) {
    r -= weights[i]!
    if (r < 0) return i
  }
  // Floating point can leave r at ~0 after the last positive weight.
  for (let i = weights.length - 1; i >= 0; i--) if (weights[i]! > 0) return i
  return -1
}
