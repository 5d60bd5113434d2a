/**
 * A declared state applied as one write (`PUT /api/state`, `switchyard ctl apply`): the
 * upstreams, routes and flags of a file replace the live ones, as one revision and one audit
 * event, like `kubectl apply` of a whole directory. What the file does not declare is kept:
 * rollouts, targets found by DNS discovery (never in the state), a target's `state` where the
 * file gives none (an operator's drain survives the next pipeline run; a file that says
 * `state: active` wins), and every flag when the file has no `flags` at all.
 *
 * A running rollout owns its route and its two upstreams: a declared state that would change
 * or remove one of them is refused (409), unless `force`, which aborts that rollout at once in
 * the same write, as `?force=true` does for a route write.
 */
import type { RouteSpec, State, Upstream } from '../config/schema.js'
import { normalizeState, type StateSpec } from '../config/validate.js'
import { SwitchyardError } from '../errors.js'
import { forceAbort, isActive } from '../rollout/machine.js'
import { rolloutsOf } from '../rollout/mutations.js'
import { noneTouched, type Touched } from '../state/delta.js'
import { indexOfRoute, replaceInDraft, type Mutation } from './mutations.js'
import { diffResources, sameValue, type ResourceChange } from '../state/diff.js'

/** A running rollout the declared state would disturb. */
export interface Conflict {
  rollout: string
  phase: string
  route: string
  /** `changes route api`, `removes upstream v2` ... */
  reason: string
}

export interface Applied {
  changed: boolean
  changes: ResourceChange[]
  /** rollouts in the way: with a dry run, those that would refuse the write (or, with force, be aborted) */
  conflicts: Conflict[]
  /** rollouts aborted by `force` */
  aborted: string[]
}

/** The declared state equals the live one: nothing to write (no revision, no audit event). */
export class NoChange extends Error {
  constructor(readonly revision: number) {
    super(`nothing to change at revision ${revision}`)
  }
}

export interface ApplyOptions {
  force: boolean
  now: number
  /** report conflicts instead of refusing: the write is only previewed */
  dryRun?: boolean
}

/**
 * The write of `spec` (checked with `checkDeclaredState`) over the draft. Throws NoChange when
 * nothing differs, 409 CONFLICT for a running rollout in the way (see the file's comment).
 */
export function applyState(spec: StateSpec, opts: ApplyOptions): Mutation<Applied> {
  return (draft) => {
    const live = { upstreams: draft.upstreams, routes: draft.routes, flags: draft.flags }
    const next = declared(draft, spec)
    const changes = diffResources(live, next)
    if (changes.length === 0) throw new NoChange(draft.revision)
    const conflicts = conflictsOf(draft, changes)
    if (conflicts.length > 0 && !opts.force && !opts.dryRun) {
      const first = conflicts[0]!
      throw new SwitchyardError(
        'CONFLICT',
        `rollout ${first.rollout} (${first.phase}) drives route ${JSON.stringify(first.route)} and this state ${first.reason}; abort the rollout first, or apply with ?force=true to abort it and apply`,
        { details: conflicts },
      )
    }
    const touched = touchedBy(changes)
    const aborted = opts.force ? [...new Set(conflicts.map((c) => c.rollout))] : []
    for (const id of aborted) {
      const r = rolloutsOf(draft)[id]!
      const move = forceAbort(r, draft.routes[indexOfRoute(draft, r.route)]!, opts.now, 'a declared state was applied with force=true over its route or upstreams')
      touched.rollouts.push(...replaceInDraft(draft, undefined, id, move.rollout).rollouts)
    }
    draft.upstreams = next.upstreams
    draft.routes = next.routes
    draft.flags = next.flags
    return {
      action: 'state.apply',
      target: 'state',
      before: side(live, touched, changes),
      after: { ...side(next, touched, changes), ...(aborted.length > 0 ? { aborted } : {}) },
      result: { changed: true, changes, conflicts, aborted },
      touched,
    }
  }
}

type Parts = Pick<State, 'upstreams' | 'routes' | 'flags'>

/**
 * `spec` as the state would hold it: normalized (target ids and states, lowercased rule
 * headers), a target without `state` keeping its live one, and every resource equal to the
 * live one kept as that very object, so the write touches only what differs.
 */
function declared(live: State, spec: StateSpec): Parts {
  const withKept = Object.fromEntries(
    Object.entries(spec.upstreams).map(([name, u]) => {
      const was = Object.hasOwn(live.upstreams, name) ? live.upstreams[name] : undefined
      if (was === undefined || u.targets === undefined) return [name, u]
      const normalized = normalizeState({ upstreams: { [name]: u }, routes: [] }).upstreams[name]!.targets
      const targets = u.targets.map((t, i) => {
        if (t.state !== undefined) return t
        const liveTarget = was.targets.find((x) => x.id === normalized[i]!.id)
        return liveTarget === undefined ? t : { ...t, state: liveTarget.state }
      })
      return [name, { ...u, targets }]
    }),
  )
  const n = normalizeState({ upstreams: withKept, routes: spec.routes, flags: spec.flags ?? {} })
  const liveRoutes = new Map(live.routes.map((r) => [r.name, r]))
  return {
    upstreams: reuse(live.upstreams, n.upstreams) as Record<string, Upstream>,
    routes: n.routes.map((r): RouteSpec => {
      const was = liveRoutes.get(r.name)
      return was !== undefined && sameValue(was, r) ? was : r
    }),
    flags: spec.flags === undefined ? live.flags : reuse(live.flags, n.flags),
  }
}

function reuse<T>(live: Record<string, T>, next: Record<string, T>): Record<string, T> {
  return Object.fromEntries(
    Object.entries(next).map(([name, v]) => {
      const was = Object.hasOwn(live, name) ? live[name] : undefined
      return [name, was !== undefined && sameValue(was, v) ? was : v]
    }),
  )
}

function touchedBy(changes: ResourceChange[]): Touched {
  const t = noneTouched()
  for (const c of changes) {
    if (c.kind === 'routes') t.order = true
    else {
      t[`${c.kind}s`].push(c.name)
      // A route that comes or goes changes the sequence of route names.
      if (c.kind === 'route' && c.op !== 'change') t.order = true
    }
  }
  return t
}

function conflictsOf(state: State, changes: ResourceChange[]): Conflict[] {
  const out: Conflict[] = []
  const verb = (c: ResourceChange) => (c.op === 'remove' ? 'removes' : 'changes')
  for (const r of Object.values(rolloutsOf(state))) {
    if (!isActive(r)) continue
    const mine = (kind: string, name: string) => changes.find((c) => c.kind === kind && 'name' in c && c.name === name)
    const at = { rollout: r.id, phase: r.phase, route: r.route }
    const route = mine('route', r.route)
    if (route !== undefined) out.push({ ...at, reason: `${verb(route)} route ${r.route}` })
    for (const u of new Set([r.from, r.to])) {
      const upstream = mine('upstream', u)
      if (upstream !== undefined) out.push({ ...at, reason: `${verb(upstream)} upstream ${u}` })
    }
  }
  return out
}

/** The audit event's side: only the resources the write touched (null where absent). */
function side(parts: Parts, touched: Touched, changes: ResourceChange[]): Record<string, unknown> {
  const routes = new Map(parts.routes.map((r) => [r.name, r]))
  const pick = <T>(names: string[], get: (n: string) => T | undefined) => Object.fromEntries(names.map((n) => [n, get(n) ?? null]))
  return {
    upstreams: pick(touched.upstreams, (n) => (Object.hasOwn(parts.upstreams, n) ? parts.upstreams[n] : undefined)),
    routes: pick(touched.routes, (n) => routes.get(n)),
    flags: pick(touched.flags, (n) => (Object.hasOwn(parts.flags, n) ? parts.flags[n] : undefined)),
    // The whole sequence only when kept routes moved: 10,000 names are not logged for one new route.
    ...(changes.some((c) => c.kind === 'routes') ? { routeOrder: parts.routes.map((r) => r.name) } : {}),
  }
}
