/**
 * Rollouts as writes: starting one, an operator's control, a driver's move, and the guard that
 * keeps hands off a route while a rollout drives it. Each is a pure mutation (see
 * control/mutations.ts) that computes its move from the draft, i.e. from the freshest record,
 * so a write that lost a race and re-runs on a newer state never applies a step twice.
 */
import type { RouteSpec, State } from '../config/schema.js'
import { indexOfRoute, replaceInDraft, type Change, type Mutation } from '../control/mutations.js'
import { formatProblem, SwitchyardError } from '../errors.js'
import type { Touched } from '../state/delta.js'
import { control, forceAbort, isActive, tick, type Control, type Move } from './machine.js'
import { appendHistory, checkStart, newRollout, previewRule, redact, routeAtStep, withDefaults, withPreview } from './plan.js'
import { isFinished, type AnalysisResult, type Rollout, type RolloutSpec } from './schema.js'
import { checkNotify } from './webhook-url.js'

/** Finished rollouts kept in the state (the oldest beyond these go when a new one starts). */
export const KEEP_FINISHED = 50

/** The state's rollouts, typed (the store keeps them as opaque records). */
export function rolloutsOf(state: State): Record<string, Rollout> {
  return state.rollouts as Record<string, Rollout>
}

/** Throws 404 unless `state` has rollout `id`. */
export function rolloutOf(state: State, id: string): Rollout {
  const r = Object.hasOwn(state.rollouts, id) ? rolloutsOf(state)[id] : undefined
  if (r === undefined) throw new SwitchyardError('NOT_FOUND', `no rollout ${JSON.stringify(id)}`)
  return r
}

/** The rollout driving `route` now (not finished, or ramping back), if any. */
export function activeOn(state: State, route: string): Rollout | undefined {
  for (const r of Object.values(rolloutsOf(state))) if (r.route === route && isActive(r)) return r
  return undefined
}

/** Raised inside a driver's mutation when the fresh record needs no write after all. */
export class NothingToDo extends Error {}

function routeOf(state: State, name: string): RouteSpec {
  return state.routes[indexOfRoute(state, name)]!
}

function union(a: Touched, b: Touched): Touched {
  const add = (x: string[], y: string[]) => [...new Set([...x, ...y])]
  return {
    upstreams: add(a.upstreams, b.upstreams),
    routes: add(a.routes, b.routes),
    flags: add(a.flags, b.flags),
    rollouts: add(a.rollouts, b.rollouts),
    order: a.order || b.order,
  }
}

const brief = (r: Rollout, split: unknown) => ({ phase: r.phase, stepIndex: r.stepIndex, weight: r.weight, split })

/** One move as a change: route and record in one write, audited under `action`. */
function changeOf(draft: State, before: Rollout, move: Move, action: string): Change<Move> {
  const routeBefore = routeOf(draft, before.route)
  const touched = replaceInDraft(draft, move.route, before.id, move.rollout)
  return {
    action,
    target: `rollouts/${before.id}`,
    before: brief(before, routeBefore.split),
    after: brief(move.rollout, (move.route ?? routeBefore).split),
    result: move,
    touched,
    reason: move.events.map((e) => e.message).join('; '),
  }
}

/**
 * Starts a rollout: the record, and the route's split at the first step (blue-green: the
 * preview rule first on the route, the split untouched). 409 while another rollout drives the
 * route; 400 for a body that cannot run. Drops the oldest finished rollouts beyond KEEP_FINISHED.
 */
export function startRollout(body: RolloutSpec, now: number): Mutation<Rollout> {
  return (draft) => {
    // Webhook targets first: a body aimed at the metadata address is refused whatever the state.
    const targets = checkNotify(body.notify)
    if (targets.length > 0) throw new SwitchyardError('VALIDATION_FAILED', targets.map(formatProblem).join('; '), { details: targets })
    const running = activeOn(draft, body.route)
    if (running !== undefined) {
      throw new SwitchyardError('CONFLICT', `route ${JSON.stringify(body.route)} already has rollout ${running.id} in progress (${running.phase})`)
    }
    const id = body.id ?? `${body.route}-${now.toString(36)}`
    const spec = withDefaults(body, id)
    const problems = checkStart(spec, draft)
    if (problems.length > 0) throw new SwitchyardError('VALIDATION_FAILED', problems.join('; '), { details: problems.map((message: string) => ({ path: 'body', message })) })
    const r = newRollout(spec, now)
    const route = routeOf(draft, spec.route)
    const next = r.strategy === 'blue-green' ? withPreview(route, previewRule(spec)) : routeAtStep(route, spec, 0)
    let touched = replaceInDraft(draft, next, id, r)
    const finished = Object.values(rolloutsOf(draft))
      .filter((x) => isFinished(x.phase) && x.ramp === undefined)
      .sort((a, b) => a.updatedAt - b.updatedAt)
    for (const old of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED))) {
      touched = union(touched, replaceInDraft(draft, undefined, old.id, undefined))
    }
    return { action: 'rollout.start', target: `rollouts/${id}`, before: { split: route.split }, after: { ...brief(r, next.split), spec: redact(r).spec }, result: r, touched }
  }
}

/** An operator's pause / resume / promote / abort; 409 when it does not apply (finished, not paused...). */
export function controlRollout(id: string, action: Control, now: number): Mutation<Move> {
  return (draft) => {
    const r = rolloutOf(draft, id)
    const move = control(r, routeOf(draft, r.route), action, now)
    if (typeof move === 'string') throw new SwitchyardError('CONFLICT', move)
    return changeOf(draft, r, move, `rollout.${action}`)
  }
}

/**
 * The driver's move for rollout `id` at `now`. `analysis` is called with the fresh record and
 * returns the result of the window just ended, or null when none is due or figures are missing.
 * Throws NothingToDo when the fresh record needs no write (another driver got there first).
 */
export function driverMove(id: string, now: number, analysis: (r: Rollout) => AnalysisResult | null): Mutation<Move> {
  return (draft) => {
    const r = Object.hasOwn(draft.rollouts, id) ? rolloutsOf(draft)[id] : undefined
    if (r === undefined || !isActive(r)) throw new NothingToDo()
    if (!draft.routes.some((x) => x.name === r.route)) {
      // The route went away under the rollout (a whole-state write): nothing left to move.
      const message = `aborted: route ${r.route} no longer exists`
      const { ramp: _ramp, pausedRemainingMs: _p, ...rest } = r
      const rollout = appendHistory({ ...rest, phase: 'aborted', message, updatedAt: now }, { at: now, event: 'aborted', stepIndex: r.stepIndex, weight: r.weight, message })
      const touched = replaceInDraft(draft, undefined, id, rollout)
      return { action: 'rollout.aborted', target: `rollouts/${id}`, before: { phase: r.phase }, after: { phase: 'aborted' }, result: { rollout, events: [{ event: 'aborted', message }] }, touched, reason: message }
    }
    const move = tick(r, routeOf(draft, r.route), now, analysis(r))
    if (move === null) throw new NothingToDo()
    const first = move.events[0]!.event
    return changeOf(draft, r, move, first === 'analysis' ? 'rollout.analysis' : `rollout.${first}`)
  }
}

/**
 * Wraps a hand-made write to route `route` (split, replace, delete): 409 while a rollout drives
 * it, unless `force`, which aborts the rollout at once (no ramp) in the same write.
 */
export function guarded<T>(route: string, force: boolean, mutation: Mutation<T>, now: number): Mutation<T> {
  return (draft) => {
    const r = activeOn(draft, route)
    if (r === undefined) return mutation(draft)
    if (!force) {
      throw new SwitchyardError('CONFLICT', `route ${JSON.stringify(route)} is driven by rollout ${r.id} (${r.phase}); abort it first, or write with ?force=true to abort it and write`, {
        details: [{ rollout: r.id, phase: r.phase }],
      })
    }
    const abort = forceAbort(r, routeOf(draft, route), now)
    const touched = replaceInDraft(draft, abort.route, r.id, abort.rollout)
    const change = mutation(draft)
    return { ...change, touched: union(touched, change.touched) }
  }
}
