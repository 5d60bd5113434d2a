/**
 * Changes, not documents: what a write changed (`Touched`) and the changed resources
 * themselves (`Delta`), so a follower fetches and recompiles only those. The full state is
 * read only at start, after an outage, or when the changes cannot be told (see
 * `Store.changesSince`).
 */
import type { FlagSpec, RouteSpec, State, Upstream } from '../config/schema.js'

/** Names of the resources one write created, replaced or deleted. */
export interface Touched {
  upstreams: string[]
  routes: string[]
  flags: string[]
  rollouts: string[]
  /** routes were added or removed, so the route order changed */
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
  rollouts: Record<string, unknown>
  /** every route name in match (declaration) order; present only when routes were added or removed */
  order?: string[]
}

export function noneTouched(): Touched {
  return { upstreams: [], routes: [], flags: [], rollouts: [], order: false }
}

// TEMPORARY (replaced by the stores branch)
export function touchedOf(d: Delta): Touched {
  return { upstreams: Object.keys(d.upstreams), routes: Object.keys(d.routes), flags: Object.keys(d.flags), rollouts: Object.keys(d.rollouts), order: d.order !== undefined }
}
export function applyDelta(state: State, d: Delta): State {
  const upstreams = { ...state.upstreams }
  for (const [k, v] of Object.entries(d.upstreams)) if (v === null) delete upstreams[k]; else upstreams[k] = v
  const flags = { ...state.flags }
  for (const [k, v] of Object.entries(d.flags)) if (v === null) delete flags[k]; else flags[k] = v
  let routes = state.routes.slice()
  for (const [k, v] of Object.entries(d.routes)) { const i = routes.findIndex((r) => r.name === k); if (v === null) { if (i >= 0) routes.splice(i, 1) } else if (i >= 0) routes[i] = v; else routes.push(v) }
  if (d.order) { const by = new Map(routes.map((r) => [r.name, r])); routes = d.order.map((n) => by.get(n)!) }
  return { revision: d.revision, upstreams, routes, flags, rollouts: state.rollouts }
}
