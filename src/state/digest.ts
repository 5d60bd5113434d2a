/**
 * A state's digest: what its content is, beside its revision, so that two states under one
 * revision are told apart (a failover to a stale replica, then a write from an instance that
 * knew only that replica, makes exactly that). Stored beside the revision by every store and
 * shown by `GET /api/instances` for each instance.
 *
 * The digest is the XOR of one 128-bit hash per resource (kind, name and its JSON) and one of
 * the route order, so a change updates it from the resources it touched alone (`digestAfter`):
 * a one-route write at 10,000 routes hashes two routes, not 10,000. JSON text is what the
 * stores keep, and JSON read back encodes to the same text, so every instance computes the
 * same digest for the same content, whichever way it came by it.
 */
import { createHash } from 'node:crypto'
import type { Touched } from './delta.js'
import { routePosition } from './route-positions.js'
import type { State } from './schema.js'

/** 32 hex digits. */
export type Digest = string

const BYTES = 16
type Kind = 'upstreams' | 'routes' | 'flags' | 'rollouts'

function hash(text: string): Buffer {
  return createHash('sha256').update(text).digest().subarray(0, BYTES)
}

function xorInto(acc: Buffer, h: Buffer): void {
  for (let i = 0; i < BYTES; i++) acc[i]! ^= h[i]!
}

function resourceHash(kind: Kind, name: string, value: unknown): Buffer {
  return hash(`${kind}\n${name}\n${JSON.stringify(value)}`)
}

function orderHash(state: State): Buffer {
  return hash(`order\n${JSON.stringify(state.routes.map((r) => r.name))}`)
}

/** Every resource of `state` with its kind and name, routes in their order. */
function* resources(state: State): Generator<[Kind, string, unknown]> {
  for (const kind of ['upstreams', 'flags', 'rollouts'] as const) {
    const record = state[kind] as Record<string, unknown>
    for (const name of Object.keys(record)) yield [kind, name, record[name]]
  }
  for (const route of state.routes) yield ['routes', route.name, route]
}

/** The digest of the whole of `state` (its revision aside). */
export function stateDigest(state: State): Digest {
  const acc = Buffer.alloc(BYTES)
  for (const [kind, name, value] of resources(state)) xorInto(acc, resourceHash(kind, name, value))
  xorInto(acc, orderHash(state))
  return acc.toString('hex')
}

/**
 * `stateDigest`, in slices of about `sliceMs` that yield to the event loop in between, for a
 * whole state read while serving (10,000 routes: ~50 ms of hashing in one piece).
 */
export async function stateDigestSliced(state: State, sliceMs = 2): Promise<Digest> {
  const acc = Buffer.alloc(BYTES)
  let until = performance.now() + sliceMs
  let n = 0
  for (const [kind, name, value] of resources(state)) {
    xorInto(acc, resourceHash(kind, name, value))
    if ((++n & 63) === 0 && performance.now() > until) {
      await new Promise<void>((resolve) => setImmediate(resolve))
      until = performance.now() + sliceMs
    }
  }
  xorInto(acc, orderHash(state))
  return acc.toString('hex')
}

/**
 * The digest of `next`, which is `before` (whose digest is `digest`) with the resources
 * `touched` names changed: each touched resource's old hash taken out and its new one put in,
 * and the route order's when a route came, went or moved. Equal to `stateDigest(next)` when
 * `digest` is `stateDigest(before)` and `touched` names every change.
 */
export function digestAfter(digest: Digest, before: State, next: State, touched: Touched): Digest {
  const acc = Buffer.from(digest, 'hex')
  if (acc.length !== BYTES) return stateDigest(next)
  for (const kind of ['upstreams', 'flags', 'rollouts'] as const) {
    const [a, b] = [before[kind] as Record<string, unknown>, next[kind] as Record<string, unknown>]
    for (const name of new Set(touched[kind])) {
      if (Object.hasOwn(a, name)) xorInto(acc, resourceHash(kind, name, a[name]))
      if (Object.hasOwn(b, name)) xorInto(acc, resourceHash(kind, name, b[name]))
    }
  }
  let order = touched.order
  if (touched.routes.length > 0) {
    const [a, b] = [routesByName(before, touched.routes), routesByName(next, touched.routes)]
    for (const name of new Set(touched.routes)) {
      const [ra, rb] = [a.get(name), b.get(name)]
      if (ra !== undefined) xorInto(acc, resourceHash('routes', name, ra))
      if (rb !== undefined) xorInto(acc, resourceHash('routes', name, rb))
      if ((ra === undefined) !== (rb === undefined)) order = true
    }
  }
  if (order) {
    xorInto(acc, orderHash(before))
    xorInto(acc, orderHash(next))
  }
  return acc.toString('hex')
}

/** The routes of `state` named in `names` (positions are cached per routes array, and checked). */
function routesByName(state: State, names: readonly string[]): Map<string, unknown> {
  const out = new Map<string, unknown>()
  for (const name of names) {
    const i = routePosition(state.routes, name)
    if (i >= 0) out.set(name, state.routes[i])
  }
  return out
}
