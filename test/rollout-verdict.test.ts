/** The analysis verdict and the plan helpers, as tables. */
import { describe, expect, it } from 'vitest'
import type { State } from '../src/config/schema.js'
import { checkStart, previewRule, redact, withDefaults, withoutPreview, withPreview } from '../src/rollout/plan.js'
import type { AnalysisSpec, RolloutSpec, ShadowResult, SideFigures } from '../src/rollout/schema.js'
import { analyze, analyzeShadow, exhausted } from '../src/rollout/verdict.js'

const side = (requests: number, errorRate: number | null, p99Ms: number | null): SideFigures => ({ requests, errors: Math.round(requests * (errorRate ?? 0)), errorRate, p99Ms })

describe('analyze', () => {
  const cfg: AnalysisSpec = { minRequests: 50, maxErrorRate: 0.01 }
  it.each([
    { name: 'too few requests to `to`: inconclusive, failures unchanged', cfg, to: side(49, 0.5, 900), from: side(1000, 0, 5), verdict: 'inconclusive', failures: 2, reason: /inconclusive: 49 of 50 requests to v2 in 10s/ },
    { name: 'healthy: pass', cfg, to: side(100, 0, 10), from: side(1000, 0, 5), verdict: 'pass', failures: 2, reason: /^pass \(v2: 100 requests/ },
    { name: 'error rate equal to the bound passes', cfg, to: side(100, 0.01, 10), from: side(100, 0, 5), verdict: 'pass', failures: 2 },
    { name: 'error rate above the bound fails', cfg, to: side(100, 0.3, 10), from: side(100, 0, 5), verdict: 'fail', failures: 3, reason: /^fail: error rate 0.3 > 0.01 on v2/ },
    { name: 'p99 above maxP99Ms fails', cfg: { ...cfg, maxP99Ms: 200 }, to: side(100, 0, 310), from: side(100, 0, 5), verdict: 'fail', failures: 3, reason: /p99 310 ms > 200 ms/ },
    { name: 'p99 equal to maxP99Ms passes', cfg: { ...cfg, maxP99Ms: 200 }, to: side(100, 0, 200), from: side(100, 0, 5), verdict: 'pass', failures: 2 },
    { name: 'error rate delta over from fails when from is comparable', cfg: { ...cfg, maxErrorRate: 1, maxErrorRateDelta: 0.05 }, to: side(100, 0.2, 5), from: side(100, 0.1, 5), verdict: 'fail', failures: 3, reason: /exceeds the other side's 0.1 by more than 0.05/ },
    { name: 'error rate delta within bound passes', cfg: { ...cfg, maxErrorRate: 1, maxErrorRateDelta: 0.1 }, to: side(100, 0.2, 5), from: side(100, 0.1, 5), verdict: 'pass', failures: 2 },
    { name: 'p99 delta over from fails', cfg: { ...cfg, maxP99DeltaMs: 100 }, to: side(100, 0, 350), from: side(100, 0, 20), verdict: 'fail', failures: 3, reason: /p99 350 ms exceeds the other side's 20 ms/ },
    { name: 'a cold from cannot be compared with: absolute bounds decide alone', cfg: { ...cfg, maxP99DeltaMs: 100 }, to: side(100, 0, 350), from: side(3, 0, 1), verdict: 'pass', failures: 2, reason: /too few to compare with: absolute bounds only/ },
    { name: 'at 100 % (from has nothing) an absolute breach still fails', cfg, to: side(100, 0.5, 5), from: side(0, null, null), verdict: 'fail', failures: 3 },
  ])('$name', ({ cfg, to, from, verdict, failures, reason }) => {
    const r = analyze(cfg, to, from, 2, 1000, 10_000, { to: 'v2', from: 'v1' })
    expect(r.verdict).toBe(verdict)
    expect(r.failures).toBe(failures)
    expect(r).toMatchObject({ requests: to.requests, errorRate: to.errorRate, p99Ms: to.p99Ms, at: 1000, windowMs: 10_000, from })
    if (reason) expect(r.reason).toMatch(reason)
  })

  it('exhausted: more failures than the limit', () => {
    expect(exhausted(0, 0)).toBe(false)
    expect(exhausted(1, 0)).toBe(true)
    expect(exhausted(2, 2)).toBe(false)
    expect(exhausted(3, 2)).toBe(true)
  })
})

describe('plan', () => {
  const state: State = {
    revision: 1,
    upstreams: { v1: { targets: [] }, v2: { targets: [] }, v3: { targets: [] } },
    routes: [
      { name: 'api', split: { v1: 100 } },
      { name: 'mixed', split: { v1: 50, v3: 50 } },
    ],
    flags: {},
    rollouts: {},
  }
  const base: RolloutSpec = { route: 'api', from: 'v1', to: 'v2' }

  it('fills in defaults', () => {
    expect(withDefaults(base, 'x')).toMatchObject({ id: 'x', strategy: 'canary', steps: [{ weight: 10 }, { weight: 50 }, { weight: 100 }], analysis: { intervalMs: 10_000, minRequests: 50, maxErrorRate: 0.01, failureLimit: 0 } })
    expect(withDefaults({ ...base, strategy: 'blue-green', preview: { header: 'X-Preview' } }, 'y').preview).toEqual({ header: 'x-preview', value: 'v2', pauseMs: 0 })
  })

  it.each([
    { name: 'a good canary', spec: base, problems: [] },
    { name: 'unknown route and upstream', spec: { ...base, route: 'nope', to: 'v9' }, problems: [/route: no route "nope"/, /to: no upstream "v9"/] },
    { name: 'from equals to', spec: { ...base, to: 'v1' }, problems: [/must differ/] },
    { name: 'decreasing steps', spec: { ...base, steps: [{ weight: 50 }, { weight: 20 }] }, problems: [/steps\[1\].weight: 20 is below/] },
    { name: 'a route sending traffic elsewhere', spec: { ...base, route: 'mixed' }, problems: [/also sends traffic to v3/] },
    { name: 'blue-green with steps', spec: { ...base, strategy: 'blue-green' as const, steps: [{ weight: 10 }] }, problems: [/a blue-green rollout has no steps/] },
  ])('checkStart: $name', ({ spec, problems }) => {
    const got = checkStart(withDefaults(spec, 'id1'), state)
    expect(got).toHaveLength(problems.length)
    problems.forEach((p, i) => expect(got[i]).toMatch(p))
  })

  it('the preview rule goes first once, and leaves without a trace', () => {
    const spec = withDefaults({ ...base, strategy: 'blue-green' }, 'b')
    const rule = previewRule(spec)
    const route = { name: 'api', split: { v1: 100 }, rules: [{ match: { header: { 'x-user': 'a' } }, upstream: 'v1' }] }
    const added = withPreview(withPreview(route, rule), rule)
    expect(added.rules).toEqual([rule, route.rules[0]])
    expect(withoutPreview(added, rule)).toEqual(route)
    expect(withoutPreview({ name: 'api', split: { v1: 1 }, rules: [rule] }, rule)).toEqual({ name: 'api', split: { v1: 1 } })
  })

  it('redact hides webhook secrets and URL paths (a Slack-style URL is a secret), not the stored spec', () => {
    const spec = withDefaults({ ...base, notify: [{ url: 'http://h/x?k=1', secret: 's' }, { url: 'https://hooks.example:8443/T1/B2/xyz' }] }, 'r')
    const shown = redact({ spec } as never)
    expect(shown.spec.notify).toEqual([{ url: 'http://h/***', secret: '***' }, { url: 'https://hooks.example:8443/***' }])
    expect(spec.notify![0]!.secret).toBe('s')
    expect(spec.notify![0]!.url).toBe('http://h/x?k=1')
  })
})

describe('analyzeShadow', () => {
  const cfg: AnalysisSpec = { minRequests: 50 }
  const shadow = (compared: number, body: number, status = 0): ShadowResult => ({
    compared,
    mismatches: { status, body },
    mismatchRate: compared === 0 ? null : (body + status) / compared,
    skipped: { body: 0, busy: 0 },
    samples: body > 0 ? [{ at: 1, method: 'GET', path: '/users/7', kind: 'body', status: 200, shadowStatus: 200, jsonPath: '$.user.name' }] : [],
  })
  it.each([
    { name: 'too few copies: inconclusive', cfg, to: side(10, 0, 5), s: shadow(10, 5), verdict: 'inconclusive', reason: /inconclusive: 10 of 50 requests to v2 \(shadow\)/ },
    { name: 'alike answers: pass, with the mismatch rate in the reason', cfg, to: side(100, 0, 5), s: shadow(100, 0), verdict: 'pass', reason: /mismatch rate 0 \(0 of 100 compared answers differ\)$/ },
    { name: 'the default bound is 0.01', cfg, to: side(100, 0, 5), s: shadow(100, 2), verdict: 'fail', reason: /^fail: mismatch rate 0.02 \(2 of 100 compared answers differ\) > 0.01 on v2 \(shadow\); e.g. GET \/users\/7 at \$.user.name/ },
    { name: 'maxMismatchRate raises it', cfg: { ...cfg, maxMismatchRate: 0.05 }, to: side(100, 0, 5), s: shadow(100, 2), verdict: 'pass' },
    { name: 'errors of the shadow fail first', cfg, to: side(100, 0.5, 5), s: shadow(50, 0), verdict: 'fail', reason: /^fail: error rate 0.5 > 0.01 on v2 \(shadow\)/ },
    { name: 'nothing compared leaves the mismatch rate unjudged', cfg, to: side(100, 0, 5), s: shadow(0, 0), verdict: 'pass' },
  ])('$name', ({ cfg, to, s, verdict, reason }) => {
    const r = analyzeShadow(cfg, to, s, side(1000, 0, 5), 0, 1000, 10_000, { to: 'v2', from: 'v1' })
    expect(r.verdict).toBe(verdict)
    expect(r.shadow).toEqual(s)
    if (reason) expect(r.reason).toMatch(reason)
  })
})
