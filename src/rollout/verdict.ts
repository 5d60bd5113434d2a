/**
 * The analysis verdict: `to`'s figures over one window, judged against the bounds and against
 * `from` over the same window. Pure; the driver supplies the figures from the fleet's telemetry.
 *
 * - fewer than `minRequests` requests to `to` → inconclusive: the rollout waits;
 * - otherwise `to` fails on its own error rate (`maxErrorRate`) or p99 (`maxP99Ms`);
 * - and, when `from` has at least `minRequests` too, on its excess over `from`
 *   (`maxErrorRateDelta`, `maxP99DeltaMs`). A `from` with too few requests (a last step at
 *   100 %, a cold `from`) cannot be compared with: the absolute bounds decide alone, so a final
 *   step at 100 % can promote.
 * A value equal to its bound passes.
 */
import type { AnalysisResult, AnalysisSpec, ShadowResult, SideFigures } from './schema.js'

export const ANALYSIS_DEFAULTS = { intervalMs: 10_000, minRequests: 50, maxErrorRate: 0.01, failureLimit: 0 } as const
/** A shadow step's default bound on differing answers: as strict as the error rate's. */
export const DEFAULT_MAX_MISMATCH_RATE = 0.01

const rate = (x: number | null) => (x === null ? '-' : String(Math.round(x * 10_000) / 10_000))
const ms = (x: number | null) => (x === null ? '-' : `${Math.round(x * 10) / 10} ms`)
const secs = (windowMs: number) => `${Math.round(windowMs / 100) / 10}s`

/** The first bound `to` breaks, in words, or null. */
function breach(cfg: AnalysisSpec, to: SideFigures, from: SideFigures, comparable: boolean): string | null {
  const maxErrorRate = cfg.maxErrorRate ?? ANALYSIS_DEFAULTS.maxErrorRate
  const toRate = to.errorRate ?? 0
  if (toRate > maxErrorRate) return `error rate ${rate(toRate)} > ${maxErrorRate}`
  if (cfg.maxP99Ms !== undefined && to.p99Ms !== null && to.p99Ms > cfg.maxP99Ms) return `p99 ${ms(to.p99Ms)} > ${cfg.maxP99Ms} ms`
  if (!comparable) return null
  const fromRate = from.errorRate ?? 0
  if (cfg.maxErrorRateDelta !== undefined && toRate - fromRate > cfg.maxErrorRateDelta) {
    return `error rate ${rate(toRate)} exceeds the other side's ${rate(fromRate)} by more than ${cfg.maxErrorRateDelta}`
  }
  if (cfg.maxP99DeltaMs !== undefined && to.p99Ms !== null && from.p99Ms !== null && to.p99Ms - from.p99Ms > cfg.maxP99DeltaMs) {
    return `p99 ${ms(to.p99Ms)} exceeds the other side's ${ms(from.p99Ms)} by more than ${cfg.maxP99DeltaMs} ms`
  }
  return null
}

/**
 * Judges one window. `failuresBefore` is the count of failed analyses so far in the rollout;
 * the result carries the new count. Names are the upstreams, for the reason's words.
 */
export function analyze(
  cfg: AnalysisSpec,
  to: SideFigures,
  from: SideFigures,
  failuresBefore: number,
  at: number,
  windowMs: number,
  names: { to: string; from: string } = { to: 'to', from: 'from' },
): AnalysisResult {
  const minRequests = cfg.minRequests ?? ANALYSIS_DEFAULTS.minRequests
  const base = { errorRate: to.errorRate, p99Ms: to.p99Ms, requests: to.requests, from, at, windowMs }
  if (to.requests < minRequests) {
    return {
      ...base,
      verdict: 'inconclusive',
      failures: failuresBefore,
      reason: `inconclusive: ${to.requests} of ${minRequests} requests to ${names.to} in ${secs(windowMs)}`,
    }
  }
  const comparable = from.requests >= minRequests
  const figures = `${names.to}: ${to.requests} requests, error rate ${rate(to.errorRate)}, p99 ${ms(to.p99Ms)}`
  const against = comparable
    ? `; ${names.from}: ${from.requests} requests, error rate ${rate(from.errorRate)}, p99 ${ms(from.p99Ms)}`
    : `; ${names.from} has ${from.requests} requests, too few to compare with: absolute bounds only`
  const broken = breach(cfg, to, from, comparable)
  if (broken !== null) {
    return { ...base, verdict: 'fail', failures: failuresBefore + 1, reason: `fail: ${broken} on ${names.to} (${figures}${against})` }
  }
  return { ...base, verdict: 'pass', failures: failuresBefore, reason: `pass (${figures}${against})` }
}

/** More failed analyses than `failureLimit`: the rollout fails. */
export function exhausted(failures: number, failureLimit: number): boolean {
  return failures > failureLimit
}

/**
 * Judges one window of a shadow step: `to`'s answers to the copies (`shadow`: requests, errors,
 * p99) by the same rules as a weight step, against `from`'s answers to the clients, then the
 * share of compared answers that differed against `maxMismatchRate` (default 0.01). Nothing
 * compared (no JSON, every copy failed) leaves the mismatch rate unjudged.
 */
export function analyzeShadow(
  cfg: AnalysisSpec,
  shadow: SideFigures,
  result: ShadowResult,
  from: SideFigures,
  failuresBefore: number,
  at: number,
  windowMs: number,
  names: { to: string; from: string },
): AnalysisResult {
  const side = analyze(cfg, shadow, from, failuresBefore, at, windowMs, { to: `${names.to} (shadow)`, from: names.from })
  const base = { ...side, shadow: result }
  if (side.verdict !== 'pass') return base
  const max = cfg.maxMismatchRate ?? DEFAULT_MAX_MISMATCH_RATE
  const differ = result.mismatches.status + result.mismatches.body
  const mismatch = `mismatch rate ${rate(result.mismatchRate)} (${differ} of ${result.compared} compared answers differ)`
  if (result.mismatchRate !== null && result.mismatchRate > max) {
    const first = result.samples[0]
    const where = first === undefined ? '' : `; e.g. ${first.method} ${first.path} ${first.kind === 'body' ? `at ${first.jsonPath}` : `status ${first.status} vs ${first.shadowStatus}`}`
    return { ...base, verdict: 'fail', failures: failuresBefore + 1, reason: `fail: ${mismatch} > ${max} on ${names.to} (shadow)${where}` }
  }
  return { ...base, reason: `${side.reason}; ${mismatch}` }
}
