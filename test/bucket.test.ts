import { describe, expect, it } from 'vitest'
import { hashKey, rendezvous, seedOf, unitHash, weightedRandom } from '../src/dataplane/bucket.js'

describe('bucketing', () => {
  const seeds = ['v1', 'v2', 'v3'].map(seedOf)
  const users = Array.from({ length: 20_000 }, (_, i) => `user-${i}`)

  it.each([
    [[90, 10]],
    [[50, 50]],
    [[1, 99]],
    [[70, 20, 10]],
  ])('rendezvous choice follows weights %j within 1.5 points', (weights) => {
    const counts = weights.map(() => 0)
    for (const u of users) counts[rendezvous(hashKey(u), seeds.slice(0, weights.length), weights)]!++
    const total = weights.reduce((a, b) => a + b, 0)
    weights.forEach((w, i) => expect(Math.abs((counts[i]! / users.length) * 100 - (w / total) * 100)).toBeLessThan(1.5))
  })

  it('is monotonic: a user on the growing upstream never leaves it while the others shrink or stay', () => {
    const steps = [
      [80, 5, 15],
      [70, 15, 15],
      [60, 30, 10],
      [10, 80, 10],
      [0, 95, 5],
    ]
    let prev: number[] | undefined
    for (const w of steps) {
      const now = users.map((u) => rendezvous(hashKey(u), seeds, w))
      if (prev) {
        for (let i = 0; i < users.length; i++) {
          // upstream 1 only grows through the steps: whoever was on it stays
          if (prev[i] === 1 && now[i] !== 1) throw new Error(`${users[i]} left the growing upstream at ${w}`)
        }
      }
      prev = now
    }
  })

  it('never picks a weight-0 upstream, and -1 when all are 0', () => {
    for (const u of users.slice(0, 1000)) expect(rendezvous(hashKey(u), seeds, [0, 7, 0])).toBe(1)
    expect(rendezvous(hashKey('x'), seeds, [0, 0, 0])).toBe(-1)
    expect(weightedRandom([0, 0, 5], 5)).toBe(2)
  })

  it('flag buckets are stable, in [0,1), and independent per seed', () => {
    const a = seedOf('flag:a')
    const b = seedOf('flag:b')
    let both = 0
    for (const u of users) {
      const x = unitHash(u, a)
      if (!(x > 0 && x < 1) || unitHash(u, a) !== x) throw new Error(`bad bucket ${x} for ${u}`)
      if (x < 0.5 && unitHash(u, b) < 0.5) both++
    }
    expect(Math.abs(both / users.length - 0.25)).toBeLessThan(0.02)
  })
})
