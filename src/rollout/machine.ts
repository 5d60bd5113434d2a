/**
 * What a rollout does next, as pure functions of its record, its route, the time and (when one
 * is due) the analysis of the last window. The driver and the admin API only carry the moves
 * out, as one revisioned write each, so a driver that takes over continues from the record
 * alone: a move is computed from the freshest record inside the write, never twice from an old one.
 *
 * Canary: step i sets `to`'s weight to steps[i].weight; it lasts at least its `pauseMs` and until
 * an analysis taken during it passes (an analysis runs every `intervalMs` from the step's start,
 * so a step lasts at least the longer of the two). A step without `pauseMs` pauses the rollout:
 * `resume` moves on, `promote` ends it at 100 %. After the last step the rollout is promoted:
 * `{from: 0, to: 100}`.
 * Blue-green: `to` gets only the requests with the preview header (a rule put first on the
 * route) until an analysis of those passes and `preview.pauseMs` has run; then one switch.
 * Analysis keeps running while paused: a canary that fails while someone looks at it still
 * rolls back.
 */
import type { RouteSpec, Split } from '../config/schema.js'
import { appendHistory, previewRule, routeAtStep, splitFor, stepText, stepWeight, withoutPreview, withoutShadow } from './plan.js'
import { isFinished, type AnalysisResult, type Rollout, type RolloutEvent } from './schema.js'
import { exhausted } from './verdict.js'

/** A rollout's next record, and the route's new split and rules when they change. */
export interface Move {
  rollout: Rollout
  /** the route with its new split (and without the preview rule once it is no longer needed) */
  route?: RouteSpec
  /** what happened, for the audit log, the history and webhooks; the first names the write */
  events: { event: RolloutEvent; message: string }[]
}

export type Control = 'pause' | 'resume' | 'promote' | 'abort'

export const intervalOf = (r: Rollout): number => r.spec.analysis?.intervalMs ?? 10_000

/** The rollout still moves weights by itself (not finished, or ramping back after an abort). */
export function isActive(r: Rollout): boolean {
  return !isFinished(r.phase) || r.ramp !== undefined
}

/** An analysis is due `intervalMs` after the last one or after the step began, whichever is later. */
export function analysisDue(r: Rollout, now: number): boolean {
  if (isFinished(r.phase)) return false
  return now - Math.max(r.analysis?.at ?? 0, r.stepStartedAt) >= intervalOf(r)
}

/** The step's pause in ms; undefined: it waits for `resume` or `promote`. */
function pauseOf(r: Rollout): number | undefined {
  if (r.strategy === 'blue-green') return r.spec.preview?.pauseMs ?? 0
  return r.spec.steps?.[r.stepIndex]?.pauseMs
}

const pct = (w: number) => `${w} %`

/** The route at an end of the rollout: `split`, no preview rule, no mirror to `to`. */
function withRoute(route: RouteSpec, split: Split, r: Rollout): RouteSpec {
  const next = { ...withoutShadow(route, r.to), split }
  return r.strategy === 'blue-green' ? withoutPreview(next, previewRule(r.spec)) : next
}

function record(r: Rollout, now: number, event: RolloutEvent, message: string, verdict?: AnalysisResult['verdict']): Rollout {
  const entry = { at: now, event, stepIndex: r.stepIndex, weight: r.weight, message, ...(verdict !== undefined ? { verdict } : {}) }
  return appendHistory({ ...r, message, updatedAt: now }, entry)
}

/** Ends the rollout at 100 % `to`. */
function promote(r: Rollout, route: RouteSpec, now: number, why: string): Move {
  const stepIndex = r.strategy === 'blue-green' ? 1 : (r.spec.steps?.length ?? 0)
  const message = `promoted${why ? ` (${why})` : ''}: 100 % ${r.to}`
  const { pausedRemainingMs: _p, ...rest } = r
  const next = record({ ...rest, phase: 'promoted', stepIndex, weight: 100, stepStartedAt: now }, now, 'promoted', message)
  return { rollout: next, route: withRoute(route, splitFor(r.from, r.to, 100), r), events: [{ event: 'promoted', message }] }
}

/** Goes back to 100 % `from` at once (failure; abort without ramp). */
function rollBack(r: Rollout, route: RouteSpec, now: number, phase: 'aborted' | 'failed', why: string): Move {
  const message = `${phase}: ${why}; back to 100 % ${r.from}`
  const { pausedRemainingMs: _p, ramp: _r, ...rest } = r
  const next = record({ ...rest, phase, weight: 0 }, now, phase, message)
  return { rollout: next, route: withRoute(route, splitFor(r.from, r.to, 0), r), events: [{ event: phase, message }] }
}

/** Ends `r` at once, back to 100 % `from`, for a hand-made write to its route with force=true (`why` says which). */
export function forceAbort(r: Rollout, route: RouteSpec, now: number, why = 'the route was written by hand with force=true'): Move {
  return rollBack(r, route, now, 'aborted', why)
}

/** Enters step `i` (or promotes past the last one). */
function enterStep(r: Rollout, route: RouteSpec, i: number, now: number, why: string): Move {
  const steps = r.spec.steps ?? []
  if (i >= steps.length) return promote(r, route, now, why)
  const weight = stepWeight(r.spec, i)
  const waits = steps[i]!.pauseMs === undefined
  const message = `step ${i + 1} of ${steps.length}: ${stepText(r.spec, i)}${why ? ` (${why})` : ''}${waits ? '; paused until resume or promote' : ''}`
  const { pausedRemainingMs: _p, ...rest } = r
  const next = record({ ...rest, phase: waits ? 'paused' : 'progressing', stepIndex: i, weight, stepStartedAt: now }, now, 'step', message)
  return { rollout: next, route: routeAtStep(route, r.spec, i), events: [{ event: 'step', message }] }
}

/** `to`'s weight during an abort that ramps back: linear from `ramp.fromWeight` to 0 over `rampMs`. */
export function rampWeight(r: Rollout, now: number): number {
  const rampMs = r.spec.abort?.rampMs ?? 0
  if (r.ramp === undefined || rampMs <= 0) return 0
  const left = 1 - (now - r.ramp.startedAt) / rampMs
  return left <= 0 ? 0 : Math.ceil(r.ramp.fromWeight * left)
}

/**
 * The driver's move for `r` at `now`, given the analysis of the window just ended when one was
 * due (`result`, computed with the failures so far), or null when nothing changes.
 */
export function tick(r: Rollout, route: RouteSpec, now: number, result: AnalysisResult | null): Move | null {
  if (r.ramp !== undefined) {
    const weight = rampWeight(r, now)
    if (weight === r.weight) return null
    if (weight === 0) {
      const { ramp: _r, ...rest } = r
      const message = `aborted: back to 100 % ${r.from}`
      return { rollout: record({ ...rest, weight: 0 }, now, 'step', message), route: { ...route, split: splitFor(r.from, r.to, 0) }, events: [{ event: 'step', message }] }
    }
    const message = `aborting: ramping back to ${r.from}, ${pct(weight)} ${r.to}`
    return { rollout: { ...r, weight, message, updatedAt: now }, route: { ...route, split: splitFor(r.from, r.to, weight) }, events: [{ event: 'step', message }] }
  }
  if (isFinished(r.phase)) return null
  let next = r
  const events: Move['events'] = []
  if (result !== null) {
    if (result.verdict === 'fail' && exhausted(result.failures, r.spec.analysis?.failureLimit ?? 0)) {
      return rollBack({ ...r, analysis: result }, route, now, 'failed', result.reason)
    }
    // The history keeps analyses that failed or changed the verdict, not every inconclusive one.
    const changed = r.analysis === null || r.analysis.verdict !== result.verdict || result.verdict === 'fail'
    next = { ...r, analysis: result, message: result.reason, updatedAt: now }
    if (changed) next = record(next, now, 'analysis', result.reason, result.verdict)
    events.push({ event: 'analysis', message: result.reason })
  }
  if (next.phase === 'progressing') {
    const pause = pauseOf(next)
    if (pause === undefined) {
      // A canary step without a pause (reached by resume): hold it until resume or promote.
      const message = `step ${next.stepIndex + 1}: ${pct(next.weight)} ${next.to}; paused until resume or promote`
      return { rollout: record({ ...next, phase: 'paused' }, now, 'paused', message), events: [...events, { event: 'paused', message }] }
    }
    const passed = next.analysis !== null && next.analysis.at >= next.stepStartedAt && next.analysis.verdict === 'pass'
    if (now - next.stepStartedAt >= pause && passed) {
      const why = `analysis passed: ${next.analysis!.reason}`
      const move = next.strategy === 'blue-green' ? promote(next, route, now, why) : enterStep(next, route, next.stepIndex + 1, now, why)
      return { ...move, events: [...move.events, ...events] }
    }
  }
  return events.length > 0 ? { rollout: next, events } : null
}

/** The move for an operator's `pause`, `resume`, `promote` or `abort`; a string says why it does not apply. */
export function control(r: Rollout, route: RouteSpec, action: Control, now: number): Move | string {
  if (isFinished(r.phase)) return `rollout ${r.id} is ${r.phase}`
  switch (action) {
    case 'pause': {
      if (r.phase === 'paused') return `rollout ${r.id} is already paused`
      const pause = pauseOf(r)
      const remaining = pause === undefined ? undefined : Math.max(0, pause - (now - r.stepStartedAt))
      const message = `paused at ${pct(r.weight)} ${r.to}`
      const next = record({ ...r, phase: 'paused', ...(remaining !== undefined ? { pausedRemainingMs: remaining } : {}) }, now, 'paused', message)
      return { rollout: next, events: [{ event: 'paused', message }] }
    }
    case 'resume': {
      if (r.phase !== 'paused') return `rollout ${r.id} is not paused`
      const pause = pauseOf(r)
      if (pause === undefined) return enterStep(r, route, r.stepIndex + 1, now, 'resumed')
      const { pausedRemainingMs, ...rest } = r
      // The pause goes on where it stopped: the step restarts as if the paused time had not passed.
      const stepStartedAt = now - (pause - (pausedRemainingMs ?? pause))
      const message = `resumed at ${pct(r.weight)} ${r.to}`
      const next = record({ ...rest, phase: 'progressing', stepStartedAt }, now, 'resumed', message)
      return { rollout: next, events: [{ event: 'resumed', message }] }
    }
    case 'promote':
      return promote(r, route, now, 'promoted by hand')
    case 'abort': {
      const rampMs = r.spec.abort?.rampMs ?? 0
      if (rampMs <= 0 || r.weight === 0) return rollBack(r, route, now, 'aborted', 'aborted by hand')
      const message = `aborted: ramping back to ${r.from} over ${rampMs} ms`
      const { pausedRemainingMs: _p, ...rest } = r
      const next = record({ ...rest, phase: 'aborted', ramp: { fromWeight: r.weight, startedAt: now } }, now, 'aborted', message)
      // The preview rule and the shadow go at once; the weight follows the ramp.
      const rules = r.strategy === 'blue-green' ? withoutPreview(route, previewRule(r.spec)) : withoutShadow(route, r.to)
      return { rollout: next, route: rules, events: [{ event: 'aborted', message }] }
    }
  }
}
