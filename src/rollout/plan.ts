/**
 * A rollout's plan: defaults, the checks before it starts, and what each step means for the
 * route (split and preview rule). Pure.
 */
import type { Rule, RouteSpec, Split, State } from '../config/schema.js'
import { isFinished, type HistoryEntry, type Notify, type Rollout, type RolloutSpec } from './schema.js'
import { ANALYSIS_DEFAULTS } from './verdict.js'
import { redactNotify } from './webhook-url.js'

/** A canary without `steps`: 10 %, 50 %, 100 %, a minute each. */
export const DEFAULT_STEPS = [
  { weight: 10, pauseMs: 60_000 },
  { weight: 50, pauseMs: 60_000 },
  { weight: 100, pauseMs: 60_000 },
]
export const DEFAULT_PREVIEW_HEADER = 'x-switchyard-preview'
const HISTORY_MAX = 100

/** `spec` with every default filled in, under id `id`. */
export function withDefaults(spec: RolloutSpec, id: string): RolloutSpec {
  const strategy = spec.strategy ?? 'canary'
  const out: RolloutSpec = { ...spec, id, strategy, analysis: { ...ANALYSIS_DEFAULTS, ...spec.analysis } }
  if (strategy === 'canary') out.steps = (spec.steps ?? DEFAULT_STEPS).map((s) => ({ ...s }))
  else out.preview = { header: DEFAULT_PREVIEW_HEADER, value: spec.to, pauseMs: 0, ...spec.preview, ...(spec.preview?.header ? { header: spec.preview.header.toLowerCase() } : {}) }
  return out
}

/** Why `spec` (defaults filled in) cannot start on `state`; empty when it can. */
export function checkStart(spec: RolloutSpec, state: State): string[] {
  const problems: string[] = []
  const q = JSON.stringify
  const route = state.routes.find((r) => r.name === spec.route)
  if (route === undefined) problems.push(`route: no route ${q(spec.route)}`)
  for (const side of ['from', 'to'] as const) {
    if (!Object.hasOwn(state.upstreams, spec[side])) problems.push(`${side}: no upstream ${q(spec[side])}`)
  }
  if (spec.from === spec.to) problems.push('to: must differ from `from`')
  if (spec.id !== undefined && Object.hasOwn(state.rollouts, spec.id)) problems.push(`id: a rollout ${q(spec.id)} exists already`)
  if (spec.strategy === 'blue-green') {
    if (spec.steps !== undefined) problems.push('steps: a blue-green rollout has no steps (it switches once after the preview passes)')
  } else {
    if (spec.preview !== undefined) problems.push('preview: only for blue-green rollouts')
    const steps = spec.steps ?? []
    let lastWeight = -1
    steps.forEach((step, i) => {
      if ((step.weight === undefined) === (step.shadow === undefined)) problems.push(`steps[${i}]: a step has either weight or shadow`)
      if (step.shadow !== undefined && lastWeight >= 0) problems.push(`steps[${i}].shadow: shadow steps come before any weight step (no user may reach ${spec.to} before its shadow step)`)
      if (step.weight === undefined) return
      if (step.weight < lastWeight) problems.push(`steps[${i}].weight: ${step.weight} is below the step before (${lastWeight}); weights must not decrease`)
      lastWeight = step.weight
    })
  }
  if (spec.shadow !== undefined && !(spec.steps ?? []).some((x) => x.shadow !== undefined)) problems.push('shadow: only for a rollout with shadow steps')
  if (route !== undefined) {
    const others = Object.entries(route.split).filter(([name, w]) => w > 0 && name !== spec.from && name !== spec.to)
    if (others.length > 0) {
      problems.push(`route: ${q(spec.route)} also sends traffic to ${others.map(([n]) => n).join(', ')}; a rollout moves a route's traffic between two upstreams only`)
    }
  }
  const shadowed = spec.strategy !== 'blue-green' && (spec.steps ?? []).some((x) => x.shadow !== undefined)
  if (route?.mirror !== undefined && route.mirror.upstream !== spec.to && shadowed) {
    problems.push(`route: ${q(spec.route)} mirrors to ${route.mirror.upstream}; a shadow step would replace that mirror: remove it first`)
  }
  for (const [i, n] of (spec.notify ?? []).entries()) {
    if (!URL.canParse(n.url)) problems.push(`notify[${i}].url: not a URL`)
  }
  return problems
}

/** The route's split with `weight` % on `to`, the rest on `from`. */
export function splitFor(from: string, to: string, weight: number): Split {
  return { [from]: 100 - weight, [to]: weight }
}

/** `to`'s weight at step `i` of a canary (0 in a shadow step); past the last step, 100. */
export function stepWeight(spec: RolloutSpec, i: number): number {
  const steps = spec.steps ?? []
  return i < steps.length ? (steps[i]!.weight ?? 0) : 100
}

/** The share copied to `to` when step `i` is a shadow step, else undefined. */
export function shadowShare(spec: RolloutSpec, i: number): number | undefined {
  return spec.strategy === 'blue-green' ? undefined : spec.steps?.[i]?.shadow
}

/**
 * `route` as step `i` wants it: the split at the step's weight and, in a shadow step, a mirror
 * of the share to `to` (with the rollout's `shadow` options); out of one, no mirror to `to`.
 */
export function routeAtStep(route: RouteSpec, spec: RolloutSpec, i: number): RouteSpec {
  const next = { ...withoutShadow(route, spec.to), split: splitFor(spec.from, spec.to, stepWeight(spec, i)) }
  const share = shadowShare(spec, i)
  return share === undefined ? next : { ...next, mirror: { upstream: spec.to, percent: share, ...spec.shadow } }
}

/**
 * `route` without a mirror to `to`: what every end of a rollout leaves (a mirror to another
 * upstream, set by hand, stays).
 */
export function withoutShadow(route: RouteSpec, to: string): RouteSpec {
  if (route.mirror?.upstream !== to) return route
  const { mirror: _mirror, ...rest } = route
  return rest
}

/** The blue-green preview rule: requests with the header reach `to`. */
export function previewRule(spec: RolloutSpec): Rule {
  const header = (spec.preview?.header ?? DEFAULT_PREVIEW_HEADER).toLowerCase()
  return { match: { header: { [header]: spec.preview?.value ?? spec.to } }, upstream: spec.to }
}

const sameRule = (a: Rule, b: Rule) => JSON.stringify(a) === JSON.stringify(b)

/** `route` with `rule` first (once). */
export function withPreview(route: RouteSpec, rule: Rule): RouteSpec {
  return { ...route, rules: [rule, ...(route.rules ?? []).filter((r) => !sameRule(r, rule))] }
}

/** `route` without `rule` (the field left out when no rule remains). */
export function withoutPreview(route: RouteSpec, rule: Rule): RouteSpec {
  const rules = (route.rules ?? []).filter((r) => !sameRule(r, rule))
  const { rules: _rules, ...rest } = route
  return rules.length > 0 ? { ...rest, rules } : rest
}

/** The record of a rollout that starts now (`spec` with its defaults). */
export function newRollout(spec: RolloutSpec, now: number): Rollout {
  const strategy = spec.strategy ?? 'canary'
  const weight = strategy === 'canary' ? stepWeight(spec, 0) : 0
  const waits = strategy === 'canary' && spec.steps?.[0]?.pauseMs === undefined
  const message =
    strategy === 'canary'
      ? `step 1 of ${spec.steps?.length ?? 0}: ${stepText(spec, 0)}${waits ? '; paused until resume or promote' : ''}`
      : `preview: requests with ${previewHeaderText(spec)} reach ${spec.to}`
  return {
    id: spec.id!,
    route: spec.route,
    from: spec.from,
    to: spec.to,
    strategy,
    phase: waits ? 'paused' : 'progressing',
    stepIndex: 0,
    weight,
    analysis: null,
    message,
    createdAt: now,
    updatedAt: now,
    stepStartedAt: now,
    spec,
    history: [{ at: now, event: 'started', stepIndex: 0, weight, message }],
  }
}

/** `20 % v2`, or for a shadow step `shadow: 20 % of requests copied to v2, 0 % v2`. */
export function stepText(spec: RolloutSpec, i: number): string {
  const share = shadowShare(spec, i)
  const weight = `${stepWeight(spec, i)} % ${spec.to}`
  return share === undefined ? weight : `shadow: ${share} % of requests copied to ${spec.to} and compared, ${weight}`
}

function previewHeaderText(spec: RolloutSpec): string {
  const rule = previewRule(spec)
  const [name, value] = Object.entries(rule.match.header ?? {})[0]!
  return `${name}: ${String(value)}`
}

/** `r` with `entry` appended to its history (the last HISTORY_MAX kept). */
export function appendHistory(r: Rollout, entry: HistoryEntry): Rollout {
  const history = r.history.length >= HISTORY_MAX ? r.history.slice(r.history.length - HISTORY_MAX + 1) : r.history.slice()
  history.push(entry)
  return { ...r, history }
}

/** What the API shows: webhook URLs cut to their host (`https://hooks.slack.com/***`), secrets `***` (see webhook-url.ts). */
export function redact(r: Rollout): Rollout {
  if (r.spec.notify === undefined || r.spec.notify.length === 0) return r
  return { ...r, spec: { ...r.spec, notify: redactNotify(r.spec.notify) } }
}

/**
 * An audit entry as the API shows it: webhook URLs and secrets in a rollout spec it carries
 * (`rollout.start`'s `after.spec`) redacted. Entries are written redacted; this covers those a
 * store kept from before webhook URLs were.
 */
export function redactEvent<E extends { before: unknown; after: unknown }>(e: E): E {
  const side = (v: unknown): unknown => {
    const spec = (v as { spec?: { notify?: unknown } } | null | undefined)?.spec
    if (!Array.isArray(spec?.notify)) return v
    return { ...(v as object), spec: { ...spec, notify: redactNotify(spec.notify as Notify[]) } }
  }
  const before = side(e.before)
  const after = side(e.after)
  return before === e.before && after === e.after ? e : { ...e, before, after }
}

export { isFinished }
