/**
 * Every change the control plane can make to the state, as pure functions: each takes the
 * draft (a private copy of the current state) and changes it in place, returning what it did
 * for the audit log. They do no I/O, so the admin API and the rollout driver make exactly the
 * same writes, and `Writer.write` can re-run one on a fresher state after losing a race.
 * A mutation throws a SwitchyardError (404, 409) when the change does not apply; semantic
 * validation of the result (references, weights) is the writer's, through `validateState`.
 */
import type { FlagSpec, RouteSpec, State, Target, TargetState, Upstream } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'

/** What a mutation did, for the audit log and the answer. */
export interface Change<T = unknown> {
  action: string
  target: string
  before: unknown
  after: unknown
  /** what the caller answers besides `revision` */
  result: T
}

export type Mutation<T> = (draft: State) => Change<T>

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
  const i = state.routes.findIndex((r) => r.name === name)
  if (i < 0) throw new SwitchyardError('NOT_FOUND', `no route ${JSON.stringify(name)}`)
  return i
}

/** Throws 404 unless `state` has flag `name`. */
export function flagOf(state: State, name: string): FlagSpec {
  const flag = Object.hasOwn(state.flags, name) ? state.flags[name] : undefined
  if (flag === undefined) throw new SwitchyardError('NOT_FOUND', `no flag ${JSON.stringify(name)}`)
  return flag
}

/** Routes whose split or rules name `upstream` (even at weight 0: the split would become invalid). */
export function routesUsing(state: State, upstream: string): string[] {
  return state.routes
    .filter((r) => Object.hasOwn(r.split, upstream) || (r.rules ?? []).some((rule) => rule.upstream === upstream))
    .map((r) => r.name)
}

const targetPath = (upstream: string, id: string) => `upstreams/${upstream}/targets/${id}`

/** Creates or replaces an upstream (`upstream` already normalized: ids and states filled in). */
export function putUpstream(name: string, upstream: Upstream): Mutation<{ created: boolean }> {
  return (draft) => {
    const before = Object.hasOwn(draft.upstreams, name) ? draft.upstreams[name] : undefined
    draft.upstreams[name] = structuredClone(upstream)
    return { action: 'upstream.put', target: `upstreams/${name}`, before: before ?? null, after: upstream, result: { created: before === undefined } }
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
    delete draft.upstreams[name]
    return { action: 'upstream.delete', target: `upstreams/${name}`, before, after: null, result: null }
  }
}

/** Adds a target (normalized); 409 if the upstream already has one with its id. */
export function addTarget(upstream: string, target: Target): Mutation<Target> {
  return (draft) => {
    const u = upstreamOf(draft, upstream)
    if (u.targets.some((t) => t.id === target.id)) {
      throw new SwitchyardError('CONFLICT', `upstream ${JSON.stringify(upstream)} already has a target ${JSON.stringify(target.id)}`)
    }
    u.targets.push({ ...target })
    return { action: 'target.add', target: targetPath(upstream, target.id), before: null, after: target, result: { ...target } }
  }
}

/** Sets a target's administrative state; `action` names why in the audit log (`target.patch`, `target.drain`). */
export function setTargetState(upstream: string, id: string, state: TargetState, action = 'target.patch'): Mutation<Target> {
  return (draft) => {
    const target = targetOf(draft, upstream, id)
    const before = { ...target }
    target.state = state
    return { action, target: targetPath(upstream, id), before, after: { ...target }, result: { ...target } }
  }
}

/** Removes a target (whatever its state: draining first is the caller's choice). */
export function removeTarget(upstream: string, id: string): Mutation<Target> {
  return (draft) => {
    const u = upstreamOf(draft, upstream)
    const before = targetOf(draft, upstream, id)
    u.targets = u.targets.filter((t) => t.id !== id)
    return { action: 'target.remove', target: targetPath(upstream, id), before, after: null, result: before }
  }
}

/** Creates or replaces a route (normalized: rule header names lowercased), keeping its place in the order. */
export function putRoute(route: RouteSpec): Mutation<{ created: boolean }> {
  return (draft) => {
    const i = draft.routes.findIndex((r) => r.name === route.name)
    const before = i < 0 ? null : draft.routes[i]
    if (i < 0) draft.routes.push(structuredClone(route))
    else draft.routes[i] = structuredClone(route)
    return { action: 'route.put', target: `routes/${route.name}`, before, after: route, result: { created: i < 0 } }
  }
}

export function deleteRoute(name: string): Mutation<null> {
  return (draft) => {
    const [before] = draft.routes.splice(indexOfRoute(draft, name), 1)
    return { action: 'route.delete', target: `routes/${name}`, before, after: null, result: null }
  }
}

/** Replaces a route's whole split: an upstream not named has weight 0 and is left out. */
export function setSplit(route: string, split: Record<string, number>): Mutation<null> {
  return (draft) => {
    const r = draft.routes[indexOfRoute(draft, route)]!
    const before = r.split
    r.split = { ...split }
    return { action: 'split.put', target: `routes/${route}/split`, before, after: { ...split }, result: null }
  }
}

export function putFlag(name: string, flag: FlagSpec): Mutation<{ created: boolean }> {
  return (draft) => {
    const before = Object.hasOwn(draft.flags, name) ? draft.flags[name] : undefined
    draft.flags[name] = structuredClone(flag)
    return { action: 'flag.put', target: `flags/${name}`, before: before ?? null, after: flag, result: { created: before === undefined } }
  }
}

export function deleteFlag(name: string): Mutation<null> {
  return (draft) => {
    const before = flagOf(draft, name)
    delete draft.flags[name]
    return { action: 'flag.delete', target: `flags/${name}`, before, after: null, result: null }
  }
}
