/**
 * Every change the control plane can make to the state, as pure functions: each takes the
 * draft (`draftOf()` the current state) and changes it, returning what it did for the audit
 * log and which resources it touched. They do no I/O, so the admin API and the rollout driver
 * make exactly the same writes, and `Writer.write` can re-run one on a fresher state after
 * losing a race. A mutation throws a SwitchyardError (404, 409) when the change does not
 * apply; semantic validation of the result is the writer's, through `validateChange`.
 *
 * Copy on write: a draft shares every resource with the state it came from (copying 10,000
 * routes per write would cost more than the write), so a mutation never changes a resource
 * in place. It replaces it with a changed copy, in a container `own()` copied for the draft.
 */
import type { FlagSpec, RouteSpec, State, Target, TargetState, Upstream } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { copyRoutes, noneTouched, routePosition, type Touched } from '../state/delta.js'

/** What a mutation did, for the audit log and the answer. */
export interface Change<T = unknown> {
  action: string
  target: string
  before: unknown
  after: unknown
  /** what the caller answers besides `revision` */
  result: T
  /** the resources it created, replaced or deleted: what the store writes and followers recompile */
  touched: Touched
  /** the audit log's reason, when the change itself knows it best (a rollout's step and figures) */
  reason?: string
}

export type Mutation<T> = (draft: State) => Change<T>

/** Containers of each draft already copied for it, so a draft copies each at most once. */
const owned = new WeakMap<State, Set<string>>()

/** A draft of `state`: a new top-level object sharing every container and resource with it. */
export function draftOf(state: State): State {
  const draft = { ...state }
  owned.set(draft, new Set())
  return draft
}

/** Makes `draft`'s container `key` its own copy (once), so it can be changed without touching the state it came from. */
function own<K extends 'upstreams' | 'routes' | 'flags' | 'rollouts'>(draft: State, key: K): State[K] {
  const mine = owned.get(draft)
  if (mine === undefined) throw new Error('mutations apply to a draftOf() a state')
  if (!mine.has(key)) {
    mine.add(key)
    const c = draft[key]
    draft[key] = (Array.isArray(c) ? copyRoutes(c) : { ...c }) as State[K]
  }
  return draft[key]
}

function touched(kind: 'upstreams' | 'routes' | 'flags' | 'rollouts', name: string, order = false): Touched {
  const t = noneTouched()
  t[kind].push(name)
  t.order = order
  return t
}

/** A route's index: a lookup, not a pass over 10,000 routes per write (see `routePosition`). */
function findRoute(state: State, name: string): number {
  return routePosition(state.routes, name)
}

/** Throws 404 unless `state` has upstream `name`. */
export function upstreamOf(state: State, name: string): Upstream {
  const upstream = Object.hasOwn(state.upstreams, name) ? state.upstreams[name] : undefined
  if (upstream === undefined) throw new SwitchyardError('NOT_FOUND', `no upstream ${JSON.stringify(name)}`)
  return upstream
}

/** Throws 404 unless upstream `upstream` has target `id`. */
export function targetOf(state: State, upstream: string, id: string): Target {
  const target = upstreamOf(state, upstream).targets.find((t) => t.id === id)
  if (target === undefined) throw new SwitchyardError('NOT_FOUND', `upstream ${JSON.stringify(upstream)} has no target ${JSON.stringify(id)}`)
  return target
}

/** Throws 404 unless `state` has route `name`; its index in `state.routes`. */
export function indexOfRoute(state: State, name: string): number {
  const i = findRoute(state, name)
  if (i < 0) throw new SwitchyardError('NOT_FOUND', `no route ${JSON.stringify(name)}`)
  return i
}

/** Throws 404 unless `state` has flag `name`. */
export function flagOf(state: State, name: string): FlagSpec {
  const flag = Object.hasOwn(state.flags, name) ? state.flags[name] : undefined
  if (flag === undefined) throw new SwitchyardError('NOT_FOUND', `no flag ${JSON.stringify(name)}`)
  return flag
}

/** Routes whose split, rules or mirror name `upstream` (even at weight 0: the split would become invalid). */
export function routesUsing(state: State, upstream: string): string[] {
  return state.routes
    .filter((r) => Object.hasOwn(r.split, upstream) || (r.rules ?? []).some((rule) => rule.upstream === upstream) || r.mirror?.upstream === upstream)
    .map((r) => r.name)
}

const targetPath = (upstream: string, id: string) => `upstreams/${upstream}/targets/${id}`

/** Creates or replaces an upstream (`upstream` already normalized: ids and states filled in). */
export function putUpstream(name: string, upstream: Upstream): Mutation<{ created: boolean }> {
  return (draft) => {
    const before = Object.hasOwn(draft.upstreams, name) ? draft.upstreams[name] : undefined
    own(draft, 'upstreams')[name] = structuredClone(upstream)
    return {
      action: 'upstream.put',
      target: `upstreams/${name}`,
      before: before ?? null,
      after: upstream,
      result: { created: before === undefined },
      touched: touched('upstreams', name),
    }
  }
}

/** Removes an upstream; 409 while a route's split or rules name it. */
export function deleteUpstream(name: string): Mutation<null> {
  return (draft) => {
    const before = upstreamOf(draft, name)
    const users = routesUsing(draft, name)
    if (users.length > 0) {
      throw new SwitchyardError('CONFLICT', `upstream ${JSON.stringify(name)} is used by route(s) ${users.join(', ')}`, {
        details: users.map((r) => ({ route: r })),
      })
    }
    delete own(draft, 'upstreams')[name]
    return { action: 'upstream.delete', target: `upstreams/${name}`, before, after: null, result: null, touched: touched('upstreams', name) }
  }
}

/** Adds a target (normalized); 409 if the upstream already has one with its id. */
export function addTarget(upstream: string, target: Target): Mutation<Target> {
  return (draft) => {
    const u = upstreamOf(draft, upstream)
    if (u.targets.some((t) => t.id === target.id)) {
      throw new SwitchyardError('CONFLICT', `upstream ${JSON.stringify(upstream)} already has a target ${JSON.stringify(target.id)}`)
    }
    own(draft, 'upstreams')[upstream] = { ...u, targets: [...u.targets, { ...target }] }
    return {
      action: 'target.add',
      target: targetPath(upstream, target.id),
      before: null,
      after: target,
      result: { ...target },
      touched: touched('upstreams', upstream),
    }
  }
}

/** Sets a target's administrative state; `action` names why in the audit log (`target.patch`, `target.drain`). */
export function setTargetState(upstream: string, id: string, state: TargetState, action = 'target.patch'): Mutation<Target> {
  return (draft) => {
    const before = targetOf(draft, upstream, id)
    const after = { ...before, state }
    const u = upstreamOf(draft, upstream)
    own(draft, 'upstreams')[upstream] = { ...u, targets: u.targets.map((t) => (t.id === id ? after : t)) }
    return {
      action,
      target: targetPath(upstream, id),
      before: { ...before },
      after: { ...after },
      result: { ...after },
      touched: touched('upstreams', upstream),
    }
  }
}

/** Removes a target (whatever its state: draining first is the caller's choice). */
export function removeTarget(upstream: string, id: string): Mutation<Target> {
  return (draft) => {
    const u = upstreamOf(draft, upstream)
    const before = targetOf(draft, upstream, id)
    own(draft, 'upstreams')[upstream] = { ...u, targets: u.targets.filter((t) => t.id !== id) }
    return {
      action: 'target.remove',
      target: targetPath(upstream, id),
      before,
      after: null,
      result: before,
      touched: touched('upstreams', upstream),
    }
  }
}

/** Creates or replaces a route (normalized: rule header names lowercased), keeping its place in the order. */
export function putRoute(route: RouteSpec): Mutation<{ created: boolean }> {
  return (draft) => {
    const i = findRoute(draft, route.name)
    const before = i < 0 ? null : draft.routes[i]
    const routes = own(draft, 'routes')
    if (i < 0) routes.push(structuredClone(route))
    else routes[i] = structuredClone(route)
    return {
      action: 'route.put',
      target: `routes/${route.name}`,
      before,
      after: route,
      result: { created: i < 0 },
      touched: touched('routes', route.name, i < 0),
    }
  }
}

export function deleteRoute(name: string): Mutation<null> {
  return (draft) => {
    const i = indexOfRoute(draft, name)
    const [before] = own(draft, 'routes').splice(i, 1)
    return { action: 'route.delete', target: `routes/${name}`, before, after: null, result: null, touched: touched('routes', name, true) }
  }
}

/** Replaces a route's whole split: an upstream not named has weight 0 and is left out. */
export function setSplit(route: string, split: Record<string, number>): Mutation<null> {
  return (draft) => {
    const i = indexOfRoute(draft, route)
    const r = draft.routes[i]!
    own(draft, 'routes')[i] = { ...r, split: { ...split } }
    return { action: 'split.put', target: `routes/${route}/split`, before: r.split, after: { ...split }, result: null, touched: touched('routes', route) }
  }
}

export function putFlag(name: string, flag: FlagSpec): Mutation<{ created: boolean }> {
  return (draft) => {
    const before = Object.hasOwn(draft.flags, name) ? draft.flags[name] : undefined
    own(draft, 'flags')[name] = structuredClone(flag)
    return {
      action: 'flag.put',
      target: `flags/${name}`,
      before: before ?? null,
      after: flag,
      result: { created: before === undefined },
      touched: touched('flags', name),
    }
  }
}

export function deleteFlag(name: string): Mutation<null> {
  return (draft) => {
    const before = flagOf(draft, name)
    delete own(draft, 'flags')[name]
    return { action: 'flag.delete', target: `flags/${name}`, before, after: null, result: null, touched: touched('flags', name) }
  }
}

/**
 * Replaces route `route.name` and rollout record `id` (undefined: deletes it) in `draft`, for
 * the rollout mutations: a weight change and the rollout step that made it are one write.
 */
export function replaceInDraft(draft: State, route: RouteSpec | undefined, id: string, rollout: unknown): Touched {
  const t = touched('rollouts', id)
  if (route !== undefined) {
    own(draft, 'routes')[indexOfRoute(draft, route.name)] = route
    t.routes.push(route.name)
  }
  const rollouts = own(draft, 'rollouts')
  if (rollout === undefined) delete rollouts[id]
  else rollouts[id] = rollout
  return t
}
