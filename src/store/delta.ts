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
