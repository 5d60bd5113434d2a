/**
 * Changes, not documents: what a write changed (`Touched`) and the changed resources
 * themselves (`Delta`), so a follower fetches and recompiles only those. The full state is
 * read only at start, after an outage, or when the changes cannot be told (see
 * `Store.changesSince`).
 *
 * Everything here is pure and never mutates its inputs. `applyDelta` shares every resource
 * (and every container) the delta leaves alone with the state it applies to, so a consumer
 * can tell what changed by identity and a one-route change at 10,000 routes costs a slice
 * and a scan, not a copy of the state.
 */
import { routePosition, sharePositions } from './route-positions.js'
import type { FlagSpec, RouteSpec, State, Upstream } from './schema.js'

export { copyRoutes, indexRoutes, routePosition } from './route-positions.js'

/** Names of the resources one write created, replaced or deleted. */
export interface Touched {
  upstreams: string[]
  routes: string[]
  flags: string[]
  rollouts: string[]
  /** the sequence of route names changed: routes were added, removed (or reordered) */
  order: boolean
}

/** The resources that changed between two revisions, as read in one consistent snapshot. */
export interface Delta {
  /** the store's revision: the delta brings the state at the asked revision to this one */
  revision: number
  /** null: deleted */
  upstreams: Record<string, Upstream | null>
  routes: Record<string, RouteSpec | null>
  flags: Record<string, FlagSpec | null>
  /** null: deleted */
  rollouts: Record<string, unknown>
  /** every route name in match (declaration) order; present only when routes were added or removed */
  order?: string[]
  /** the digest of the store's state at `revision` (state/digest.ts), when the store holds one */
  digest?: string
}

/** The kinds of named resources a state holds, in the order stores and deltas list them. */
export const RESOURCE_KINDS = ['upstreams', 'routes', 'flags', 'rollouts'] as const
export type ResourceKind = (typeof RESOURCE_KINDS)[number]

export function noneTouched(): Touched {
  return { upstreams: [], routes: [], flags: [], rollouts: [], order: false }
}

/** What `delta` changes, by name. */
export function touchedOf(delta: Delta): Touched {
  return {
    upstreams: Object.keys(delta.upstreams),
    routes: Object.keys(delta.routes),
    flags: Object.keys(delta.flags),
    rollouts: Object.keys(delta.rollouts),
    order: delta.order !== undefined,
  }
}

/** True when `delta` changes nothing (its revision may still be newer: nothing to apply). */
export function isEmpty(delta: Delta): boolean {
  return delta.order === undefined && !hasKeys(delta.upstreams) && !hasKeys(delta.routes) && !hasKeys(delta.flags) && !hasKeys(delta.rollouts)
}

/**
 * `state` with `delta` applied, at `delta.revision`. Every resource the delta does not name
 * keeps its object, and a container it does not change is the same object. Routes: with
 * `order`, the array is rebuilt in that order (throws when a name is neither in the delta
 * nor in `state`); without, a changed route is replaced where it stands, null removes it and
 * an unknown name is appended.
 */
export function applyDelta(state: State, delta: Delta): State {
  return {
    revision: delta.revision,
    upstreams: applyRecord(state.upstreams, delta.upstreams),
    routes: applyRoutes(state.routes, delta.routes, delta.order),
    flags: applyRecord(state.flags, delta.flags),
    rollouts: applyRecord(state.rollouts, delta.rollouts),
  }
}

function hasKeys(record: Record<string, unknown>): boolean {
  for (const key in record) if (Object.hasOwn(record, key)) return true
  return false
}

/** A copy of `record` with `changes` applied (null deletes), or `record` itself when there are none. */
function applyRecord<T>(record: Record<string, T>, changes: Record<string, T | null>): Record<string, T> {
  const names = Object.keys(changes)
  if (names.length === 0) return record
  // Upstreams, flags and rollouts number in the tens or hundreds: a spread copy is cheap.
  const out = { ...record }
  for (const name of names) {
    const value = changes[name]
    if (value === null || value === undefined) delete out[name]
    else out[name] = value
  }
  return out
}


/** Above this many changed routes, one pass over the routes beats one lookup per changed route. */
const SCAN_PER_ROUTE_MAX = 8

function applyRoutes(routes: RouteSpec[], changes: Record<string, RouteSpec | null>, order: string[] | undefined): RouteSpec[] {
  if (order !== undefined) return routesInOrder(routes, changes, order)
  const names = Object.keys(changes)
  if (names.length === 0) return routes
  if (names.length > SCAN_PER_ROUTE_MAX) return routesInOnePass(routes, changes, names)
  const out = routes.slice()
  let moved = false
  for (const name of names) {
    const route = changes[name] ?? null
    const i = moved ? scan(out, name) : routePosition(routes, name)
    if (route === null) {
      if (i >= 0) {
        out.splice(i, 1)
        moved = true
      }
    } else if (i >= 0) out[i] = route
    else {
      out.push(route)
      moved = true
    }
  }
  // Same names at the same places: the positions hold for the new array too.
  if (!moved) sharePositions(routes, out)
  return out
}

function scan(routes: readonly RouteSpec[], name: string): number {
  for (let i = 0; i < routes.length; i++) if (routes[i]!.name === name) return i
  return -1
}

/** Many changed routes: one pass that replaces or drops, then the unknown ones appended. */
function routesInOnePass(routes: RouteSpec[], changes: Record<string, RouteSpec | null>, names: string[]): RouteSpec[] {
  const pending = new Set(names)
  const out: RouteSpec[] = []
  for (const route of routes) {
    if (!pending.has(route.name)) {
      out.push(route)
      continue
    }
    pending.delete(route.name)
    const changed = changes[route.name]
    if (changed !== null && changed !== undefined) out.push(changed)
  }
  for (const name of pending) {
    const route = changes[name]
    if (route !== null && route !== undefined) out.push(route)
  }
  return out
}

function routesInOrder(routes: RouteSpec[], changes: Record<string, RouteSpec | null>, order: string[]): RouteSpec[] {
  const known = new Map<string, RouteSpec>()
  for (const route of routes) known.set(route.name, route)
  return order.map((name) => {
    const route = Object.hasOwn(changes, name) ? changes[name] : known.get(name)
    if (route === null) throw new Error(`applyDelta: route ${JSON.stringify(name)} is in the order but the delta deletes it`)
    if (route === undefined) throw new Error(`applyDelta: route ${JSON.stringify(name)} is in the order but neither in the delta nor in the state`)
    return route
  })
}
