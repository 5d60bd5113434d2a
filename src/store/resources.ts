/**
 * A state as the stores keep it: one JSON text per named resource, plus the route order.
 * Both stores encode writes and decode reads here, so memory and Redis agree byte for byte
 * on what a resource is, and a commit encodes only the resources it touched.
 */
import type { State } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { RESOURCE_KINDS, routePosition, type Delta, type ResourceKind, type Touched } from '../state/delta.js'

/** Resource writes per kind: name and JSON, or null to delete the name. */
export type Writes = Record<ResourceKind, Array<[name: string, json: string | null]>>

/** A copy of `touched` with each name once and nothing but its fields. */
export function normalizeTouched(touched: Touched): Touched {
  const unique = (names: readonly string[]): string[] => (names.length < 2 ? names.slice() : [...new Set(names)])
  return {
    upstreams: unique(touched.upstreams),
    routes: unique(touched.routes),
    flags: unique(touched.flags),
    rollouts: unique(touched.rollouts),
    order: touched.order === true,
  }
}

export function routeNames(state: State): string[] {
  return state.routes.map((r) => r.name)
}

/** Every resource of `state`, encoded. */
export function allResources(state: State): Writes {
  return {
    upstreams: Object.keys(state.upstreams).map((name) => [name, JSON.stringify(state.upstreams[name])]),
    routes: state.routes.map((route) => [route.name, JSON.stringify(route)]),
    flags: Object.keys(state.flags).map((name) => [name, JSON.stringify(state.flags[name])]),
    rollouts: Object.keys(state.rollouts).map((name) => [name, JSON.stringify(state.rollouts[name])]),
  }
}

/** The resources `touched` names, encoded from `next`; a name `next` lacks is a deletion. */
export function touchedResources(next: State, touched: Touched): Writes {
  const fromRecord = (record: Record<string, unknown>, names: string[]): Writes[ResourceKind] =>
    names.map((name) => [name, Object.hasOwn(record, name) ? JSON.stringify(record[name]) : null])
  return {
    upstreams: fromRecord(next.upstreams, touched.upstreams),
    routes: touchedRoutes(next, touched.routes),
    flags: fromRecord(next.flags, touched.flags),
    rollouts: fromRecord(next.rollouts, touched.rollouts),
  }
}

function touchedRoutes(next: State, names: string[]): Writes['routes'] {
  const routes = next.routes
  // By position (kept per routes array, see `routePosition`): no pass over 10,000 routes.
  return names.map((name) => {
    const i = routePosition(routes, name)
    return [name, i < 0 ? null : JSON.stringify(routes[i])]
  })
}

/** Reads stored JSON, reporting a corrupt value as INTERNAL rather than a bare SyntaxError. */
export function parseStored<T>(json: string, what: string): T {
  try {
    return JSON.parse(json) as T
  } catch (err) {
    throw new SwitchyardError('INTERNAL', `the stored ${what} is not valid JSON`, { cause: err })
  }
}

/** Stored resources of one kind, by name: a Map or the pairs of an HGETALL reply. */
export type StoredKind = Iterable<[string, string]>

/**
 * The state at `revision` from its stored resources. Routes come in `order`, which must name
 * exactly the stored routes; records keep the order of `stored` (`sortNames` sorts them,
 * for stores whose order is arbitrary, so every instance lists them alike).
 */
export function decodeState(revision: number, order: string[], stored: Record<ResourceKind, StoredKind>, sortNames = false): State {
  const record = (kind: ResourceKind): Record<string, never> => {
    let pairs = [...stored[kind]]
    if (sortNames) pairs = pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    const out: Record<string, never> = {}
    for (const [name, json] of pairs) out[name] = parseStored(json, `${kind.slice(0, -1)} ${JSON.stringify(name)}`)
    return out
  }
  const routes = new Map(stored.routes)
  if (routes.size !== order.length) throw inconsistent(`${routes.size} routes but ${order.length} in the route order`)
  return {
    revision,
    upstreams: record('upstreams'),
    routes: order.map((name) => {
      const json = routes.get(name)
      if (json === undefined) throw inconsistent(`route ${JSON.stringify(name)} is in the route order but not stored`)
      return parseStored(json, `route ${JSON.stringify(name)}`)
    }),
    flags: record('flags'),
    rollouts: record('rollouts'),
  }
}

/** A delta from the stored JSON of the changed names (null: deleted). */
export function decodeDelta(revision: number, order: string[] | undefined, changed: Record<ResourceKind, Iterable<[string, string | null]>>): Delta {
  const delta: Delta = { revision, upstreams: {}, routes: {}, flags: {}, rollouts: {} }
  for (const kind of RESOURCE_KINDS) {
    const out = delta[kind] as Record<string, unknown>
    for (const [name, json] of changed[kind]) out[name] = json === null ? null : parseStored(json, `${kind.slice(0, -1)} ${JSON.stringify(name)}`)
  }
  if (order !== undefined) delta.order = order
  return delta
}

function inconsistent(why: string): SwitchyardError {
  return new SwitchyardError('INTERNAL', `the stored state is inconsistent: ${why}`)
}
