/**
 * The rollout's moves as pure functions, through the mutations the driver and the admin API
 * write: each test builds a state, applies moves at chosen times with chosen analyses, and
 * checks the record and the route's split.
 */
import { describe, expect, it } from 'vitest'
import type { RouteSpec, State } from '../src/config/schema.js'
import { draftOf } from '../src/control/mutations.js'
import { SwitchyardError } from '../src/errors.js'
import { analysisDue, control, rampWeight, tick } from '../src/rollout/machine.js'
import { controlRollout, driverMove, guarded, KEEP_FINISHED, NothingToDo, rolloutsOf, startRollout } from '../src/rollout/mutations.js'
import type { AnalysisResult, Rollout, RolloutSpec } from '../src/rollout/schema.js'
import { setSplit } from '../src/control/mutations.js'

const T0 = 1_700_000_000_000

function state(): State {
  const upstream = (port: number) => ({ targets: [{ id: `t${port}`, url: `http://127.0.0.1:${port}`, state: 'active' as const }] })
  return {
    revision: 1,
    upstreams: { v1: upstream(1), v2: upstream(2), v3: upstream(3) },
    routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100 } }],
    flags: {},
    rollouts: {},
  }
}

/** Applies `mutation` to a draft of `s`; the new state (revision + 1) and the change. */
function apply<T>(s: State, mutation: (d: State) => { result: T }): { s: State; result: T } {
  const d = draftOf(s)
  const { result } = mutation(d)
  return { s: { ...d, revision: s.revision + 1 }, result }
}

const canary: RolloutSpec = {
  id: 'r1',
  route: 'api',
  from: 'v1',
  to: 'v2',
  steps: [
    { weight: 10, pauseMs: 1000 },
    { weight: 50, pauseMs: 1000 },
  ],
  analysis: { intervalMs: 500, minRequests: 10 },
}

function result(verdict: AnalysisResult['verdict'], at: number, failures = 0): AnalysisResult {
  return { verdict, errorRate: 0, p99Ms: 5, requests: 100, failures, reason: `${verdict} at ${at}`, at, windowMs: 500 }
}

const route = (s: State): RouteSpec => s.routes.find((r) => r.name === 'api')!
const rollout = (s: State, id = 'r1'): Rollout => rolloutsOf(s)[id]!

/** A driver move at `now` with `verdict` as the analysis when one is due. */
function drive(s: State, now: number, verdict?: AnalysisResult['verdict'], id = 'r1'): State {
  return apply(s, driverMove(id, now, (r) => (verdict && analysisDue(r, now) ? result(verdict, now, (r.analysis?.failures ?? 0) + (verdict === 'fail' ? 1 : 0)) : null))).s
}

function started(spec: RolloutSpec = canary): State {
  return apply(state(), startRollout(spec, T0)).s
}

describe('canary', () => {
  it('starts at the first step: split and record in one write', () => {
    const s = started()
    expect(route(s).split).toEqual({ v1: 90, v2: 10 })
    expect(rollout(s)).toMatchObject({ phase: 'progressing', stepIndex: 0, weight: 10, analysis: null, stepStartedAt: T0 })
  })

  it('moves to the next step only when the pause ran and an analysis of the step passed, then promotes', () => {
    let s = started()
    expect(() => drive(s, T0 + 100)).toThrow(NothingToDo)
    s = drive(s, T0 + 500, 'pass') // analysis recorded, pause not over
    expect(rollout(s)).toMatchObject({ stepIndex: 0, weight: 10, analysis: { verdict: 'pass' } })
    s = drive(s, T0 + 1000, 'pass')
    expect(rollout(s)).toMatchObject({ phase: 'progressing', stepIndex: 1, weight: 50, stepStartedAt: T0 + 1000 })
    expect(route(s).split).toEqual({ v1: 50, v2: 50 })
    s = drive(s, T0 + 1500, 'pass')
    expect(rollout(s).stepIndex).toBe(1)
    s = drive(s, T0 + 2000, 'pass')
    expect(rollout(s)).toMatchObject({ phase: 'promoted', weight: 100 })
    expect(route(s).split).toEqual({ v1: 0, v2: 100 })
    expect(() => drive(s, T0 + 9000, 'pass')).toThrow(NothingToDo)
  })

  it('an inconclusive analysis holds the step: it neither advances nor fails', () => {
    let s = started()
    for (let t = T0 + 500; t <= T0 + 5000; t += 500) s = drive(s, t, 'inconclusive')
    expect(rollout(s)).toMatchObject({ phase: 'progressing', stepIndex: 0, weight: 10, analysis: { verdict: 'inconclusive', failures: 0 } })
    expect(rollout(s).message).toContain('inconclusive')
    expect(route(s).split).toEqual({ v1: 90, v2: 10 })
  })

  it('a failed analysis beyond failureLimit rolls back to 100 % from', () => {
    let s = started({ ...canary, analysis: { ...canary.analysis, failureLimit: 1 } })
    s = drive(s, T0 + 500, 'fail')
    expect(rollout(s)).toMatchObject({ phase: 'progressing', analysis: { verdict: 'fail', failures: 1 } })
    s = drive(s, T0 + 1000, 'fail')
    expect(rollout(s)).toMatchObject({ phase: 'failed', weight: 0, analysis: { failures: 2 } })
    expect(route(s).split).toEqual({ v1: 100, v2: 0 })
    expect(rollout(s).history.filter((h) => h.event === 'failed')).toHaveLength(1)
  })

  it('a step without pauseMs pauses; resume moves on, promote ends at 100 %', () => {
    let s = started({ ...canary, steps: [{ weight: 20, pauseMs: 0 }, { weight: 40 }, { weight: 80, pauseMs: 0 }] })
    s = drive(s, T0 + 500, 'pass')
    expect(rollout(s)).toMatchObject({ phase: 'paused', stepIndex: 1, weight: 40 })
    s = drive(s, T0 + 5000, 'pass') // analysis goes on while paused
    expect(rollout(s)).toMatchObject({ phase: 'paused', stepIndex: 1 })
    s = apply(s, controlRollout('r1', 'resume', T0 + 6000)).s
    expect(rollout(s)).toMatchObject({ phase: 'progressing', stepIndex: 2, weight: 80 })
    s = apply(s, controlRollout('r1', 'promote', T0 + 6100)).s
    expect(rollout(s)).toMatchObject({ phase: 'promoted', weight: 100 })
    expect(route(s).split).toEqual({ v1: 0, v2: 100 })
  })

  it('pause holds the weight and keeps what was left of the pause; resume continues it', () => {
    let s = started({ ...canary, steps: [{ weight: 10, pauseMs: 10_000 }] })
    s = apply(s, controlRollout('r1', 'pause', T0 + 4000)).s
    expect(rollout(s)).toMatchObject({ phase: 'paused', pausedRemainingMs: 6000, weight: 10 })
    s = drive(s, T0 + 60_000, 'pass')
    expect(rollout(s)).toMatchObject({ phase: 'paused', weight: 10 })
    s = apply(s, controlRollout('r1', 'resume', T0 + 100_000)).s
    expect(rollout(s)).toMatchObject({ phase: 'progressing', stepStartedAt: T0 + 100_000 - 4000 })
    expect(rollout(s).pausedRemainingMs).toBeUndefined()
    expect(() => apply(s, controlRollout('r1', 'resume', T0 + 100_001))).toThrow(/not paused/)
  })

  it('abort restores 100 % from at once, or ramps back over rampMs', () => {
    let s = started()
    const aborted = apply(s, controlRollout('r1', 'abort', T0 + 10)).s
    expect(rollout(aborted)).toMatchObject({ phase: 'aborted', weight: 0 })
    expect(route(aborted).split).toEqual({ v1: 100, v2: 0 })
    expect(() => apply(aborted, controlRollout('r1', 'promote', T0 + 20))).toThrow(SwitchyardError)

    s = started({ ...canary, steps: [{ weight: 40, pauseMs: 1000 }], abort: { rampMs: 1000 } })
    s = apply(s, controlRollout('r1', 'abort', T0 + 100)).s
    expect(rollout(s)).toMatchObject({ phase: 'aborted', weight: 40, ramp: { fromWeight: 40, startedAt: T0 + 100 } })
    expect(rampWeight(rollout(s), T0 + 600)).toBe(20)
    s = drive(s, T0 + 600)
    expect(route(s).split).toEqual({ v1: 80, v2: 20 })
    s = drive(s, T0 + 1100)
    expect(rollout(s)).toMatchObject({ phase: 'aborted', weight: 0 })
    expect(rollout(s).ramp).toBeUndefined()
    expect(route(s).split).toEqual({ v1: 100, v2: 0 })
  })
})

describe('blue-green', () => {
  const bg: RolloutSpec = { id: 'r1', route: 'api', from: 'v1', to: 'v2', strategy: 'blue-green', preview: { pauseMs: 1000 }, analysis: { intervalMs: 500 } }

  it('puts the preview rule first, leaves the split, switches once after a passing analysis and the preview pause', () => {
    let s = started(bg)
    expect(route(s).split).toEqual({ v1: 100 })
    expect(route(s).rules?.[0]).toEqual({ match: { header: { 'x-switchyard-preview': 'v2' } }, upstream: 'v2' })
    s = drive(s, T0 + 500, 'pass')
    expect(rollout(s)).toMatchObject({ phase: 'progressing', weight: 0 })
    s = drive(s, T0 + 1000, 'pass')
    expect(rollout(s)).toMatchObject({ phase: 'promoted', weight: 100 })
    expect(route(s).split).toEqual({ v1: 0, v2: 100 })
    expect(route(s).rules ?? []).toEqual([])
  })

  it('a failed preview removes the rule and leaves from as it was', () => {
    let s = started(bg)
    s = drive(s, T0 + 500, 'fail')
    expect(rollout(s).phase).toBe('failed')
    expect(route(s).rules ?? []).toEqual([])
    expect(route(s).split).toEqual({ v1: 100, v2: 0 })
  })
})

describe('guard and bookkeeping', () => {
  it('a hand-made split write during a rollout is refused; force aborts the rollout in the same write', () => {
    const s = started()
    expect(() => apply(s, guarded('api', false, setSplit('api', { v1: 50, v2: 50 }), T0 + 1))).toThrow(/rollout r1/)
    const forced = apply(s, guarded('api', true, setSplit('api', { v1: 50, v2: 50 }), T0 + 1)).s
    expect(route(forced).split).toEqual({ v1: 50, v2: 50 })
    expect(rollout(forced)).toMatchObject({ phase: 'aborted' })
    // once finished, hand-made writes go through
    expect(() => apply(forced, guarded('api', false, setSplit('api', { v1: 100 }), T0 + 2))).not.toThrow()
  })

  it('one rollout per route at a time; finished ones beyond KEEP_FINISHED are dropped', () => {
    let s = started()
    expect(() => apply(s, startRollout({ ...canary, id: 'r2' }, T0 + 1))).toThrow(/already has rollout r1/)
    for (let i = 0; i < KEEP_FINISHED + 3; i++) {
      s = apply(s, controlRollout(i === 0 ? 'r1' : `x${i - 1}`, 'abort', T0 + 10 * i + 1)).s
      s = apply(s, startRollout({ ...canary, id: `x${i}` }, T0 + 10 * i + 5)).s
    }
    const finished = Object.values(rolloutsOf(s)).filter((r) => r.phase === 'aborted')
    expect(finished).toHaveLength(KEEP_FINISHED)
    expect(rolloutsOf(s)['r1']).toBeUndefined()
  })

  it('control of a finished rollout answers why; tick leaves finished rollouts alone', () => {
    const s = apply(started(), controlRollout('r1', 'promote', T0 + 1)).s
    expect(control(rollout(s), route(s), 'abort', T0 + 2)).toMatch(/promoted/)
    expect(tick(rollout(s), route(s), T0 + 10_000, result('fail', T0 + 10_000))).toBeNull()
  })
})

describe('a route that went away', () => {
  it('the driver aborts the rollout instead of failing every tick', () => {
    const s = started()
    const gone = { ...s, routes: [] }
    const next = apply(gone, driverMove('r1', T0 + 10, () => null)).s
    expect(rollout(next)).toMatchObject({ phase: 'aborted', message: 'aborted: route api no longer exists' })
    expect(() => drive(next, T0 + 20, 'pass')).toThrow(NothingToDo)
  })
})

describe('shadow steps', () => {
  const shadowed: RolloutSpec = {
    ...canary,
    steps: [{ shadow: 20, pauseMs: 1000 }, { weight: 50, pauseMs: 1000 }],
    shadow: { ignore: ['id'], maxBodyBytes: 1024 },
  }
  const mirrorOf = (s: State) => route(s).mirror

  it('mirror the share to `to` at weight 0, and drop the mirror when weight moves', () => {
    let s = started(shadowed)
    expect(rollout(s)).toMatchObject({ stepIndex: 0, weight: 0 })
    expect(route(s).split).toEqual({ v1: 100, v2: 0 })
    expect(mirrorOf(s)).toEqual({ upstream: 'v2', percent: 20, ignore: ['id'], maxBodyBytes: 1024 })
    s = drive(s, T0 + 1000, 'pass')
    expect(rollout(s)).toMatchObject({ stepIndex: 1, weight: 50 })
    expect(route(s).split).toEqual({ v1: 50, v2: 50 })
    expect(mirrorOf(s)).toBeUndefined()
  })

  it.each([
    ['a failed analysis', (s: State) => drive(s, T0 + 500, 'fail')],
    ['abort', (s: State) => apply(s, controlRollout('r1', 'abort', T0 + 100)).s],
    ['promote', (s: State) => apply(s, controlRollout('r1', 'promote', T0 + 100)).s],
    ['a forced hand-made split', (s: State) => apply(s, guarded('api', true, setSplit('api', { v1: 100 }), T0 + 100)).s],
  ])('%s in a shadow step removes the mirror', (_name, end) => {
    const s = end(started(shadowed))
    expect(['failed', 'aborted', 'promoted']).toContain(rollout(s).phase)
    expect(mirrorOf(s)).toBeUndefined()
  })

  it('refuse to replace a mirror to another upstream', () => {
    const s0 = state()
    s0.routes[0] = { ...s0.routes[0]!, mirror: { upstream: 'v3', percent: 5 } }
    expect(() => apply(s0, startRollout(shadowed, T0))).toThrow(/mirrors to v3; a shadow step would replace that mirror/)
  })

  it('leave a mirror to another upstream alone', () => {
    const s0 = state()
    s0.routes[0] = { ...s0.routes[0]!, mirror: { upstream: 'v3', percent: 5 } }
    const s = apply(apply(s0, startRollout(canary, T0)).s, controlRollout('r1', 'abort', T0 + 100)).s
    expect(mirrorOf(s)).toEqual({ upstream: 'v3', percent: 5 })
  })
})
