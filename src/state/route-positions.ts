/**
 * Where each route stands in a routes array, cached per array: shared by the stores, the
 * control plane and the data plane's compiler, which all look routes up by name at 10,000 routes.
 */
import type { RouteSpec } from './schema.js'

/**
 * Route positions by name, per routes array, built on first use. A change that replaces routes
 * where they stand hands its positions on to the array it makes, so a fleet following one-route
 * changes never scans 10,000 routes (in a process among 20 on 2 cores, such a scan runs on cold
 * caches: ~1 ms a pass). A position is checked before use, so an array changed in place (a
 * draft) costs a rebuild, never a wrong answer; names are unique in a state.
 */
const positions = new WeakMap<readonly RouteSpec[], Map<string, number>>()

/** Where the route `name` stands in `routes`, or -1. */
export function routePosition(routes: readonly RouteSpec[], name: string): number {
  const known = positions.get(routes)
  if (known !== undefined) {
    const i = known.get(name)
    if (i !== undefined && routes[i]?.name === name) return i
  }
  // Unknown here (or moved): build them afresh. Rare: a route that comes or goes comes with
  // the new order (`routesInOrder`), and drafts are looked up once.
  return indexRoutes(routes).get(name) ?? -1
}

/**
 * Learns the positions of `routes` now: a follower does it when it applies a whole state, so
 * the first change after a start or a reload does not pay for it (10,000 routes: ~10 ms of
 * cold code in each of 20 processes at once).
 */
export function indexRoutes(routes: readonly RouteSpec[]): Map<string, number> {
  const built = new Map<string, number>()
  for (let i = 0; i < routes.length; i++) built.set(routes[i]!.name, i)
  positions.set(routes, built)
  return built
}

/** A copy of `routes` to change in place (a draft's), knowing the positions `routes` knew. */
export function copyRoutes(routes: readonly RouteSpec[]): RouteSpec[] {
  const out = routes.slice()
  const known = positions.get(routes)
  if (known !== undefined) positions.set(out, known)
  return out
}

/** `to` has the same routes at the same places as `from`: it knows `from`'s positions. */
export function sharePositions(from: readonly RouteSpec[], to: readonly RouteSpec[]): void {
  const known = positions.get(from)
  if (known !== undefined) positions.set(to, known)
}
