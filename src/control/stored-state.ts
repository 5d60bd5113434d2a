/**
 * What the store hands over is checked before anything is compiled, as an admin write is: the
 * store is shared (another instance, an older version, an operator with redis-cli, whoever
 * reaches Redis can write it), so a state read from it is input, not truth. Every resource is
 * checked against its schema, then the semantic checks of `validate.ts` run: a whole state
 * (`storedStateProblems`) entirely, a change (`storedChangeProblems`) on what it touches only,
 * so a follower applying one route's change at 10,000 routes checks that route, not 10,000.
 * A state that fails is not applied: the follower keeps the last good one, logs and counts
 * it, and stays behind the store (which makes it a laggard) until a good state comes.
 *
 * The `tls.ca` files a state names are read by the follower itself, asynchronously, before the
 * compile (see `Follower`); rollout records are the driver's and are checked only for being
 * records of their name.
 */
import Type from 'typebox'
import { Compile } from 'typebox/compile'
import { FlagSpec, NAME_PATTERN, RouteSpec, TargetId, TargetSpec, TargetState, UpstreamSpec, type State } from '../config/schema.js'
import { formatPath, schemaProblems, type PathSegment } from '../config/shape.js'
import { validateChange, validateState } from '../config/validate.js'
import type { Problem } from '../errors.js'
import { RESOURCE_KINDS, routePosition, touchedOf, type Delta, type ResourceKind } from '../state/delta.js'

/** A target as the state holds it: id and state filled in. */
const StoredTarget = Type.Object({ id: TargetId, url: TargetSpec.properties.url, state: TargetState }, { additionalProperties: false })
/** An upstream as the state holds it (targets normalized; none for discovery alone). */
const StoredUpstream = Type.Object(
  { ...UpstreamSpec.properties, targets: Type.Array(StoredTarget, { maxItems: 1000 }) },
  { additionalProperties: false },
)

const SCHEMAS = { upstreams: StoredUpstream, routes: RouteSpec, flags: FlagSpec } as const
/** Compiled once, at import: a check then costs microseconds per resource. */
const CHECKERS = { upstreams: Compile(StoredUpstream), routes: Compile(RouteSpec), flags: Compile(FlagSpec) } as const
const NAME = new RegExp(NAME_PATTERN)

/** At most this many problems are told (the log line of a state that fails). */
const PROBLEMS_MAX = 20

/** Problems of one stored resource, at `at` (`upstreams.v1`, `routes[3]`, `rollouts.r1`). */
function resourceProblems(kind: ResourceKind, name: string, value: unknown, at: PathSegment[], out: Problem[]): void {
  const where = formatPath(at)
  if (kind !== 'routes' && !NAME.test(name)) out.push({ path: where, message: `invalid name (must match ${NAME_PATTERN})` })
  if (kind === 'rollouts') {
    if (typeof value !== 'object' || value === null || (value as { id?: unknown }).id !== name) out.push({ path: where, message: 'must be a rollout record whose id is its name' })
    return
  }
  const checker = CHECKERS[kind]
  if (!checker.Check(value)) {
    out.push(...schemaProblems([...checker.Errors(value)], value, { prefix: at, schema: SCHEMAS[kind], keyPaths: true }))
    return
  }
  if (kind === 'routes' && (value as RouteSpec).name !== name) out.push({ path: formatPath([...at, 'name']), message: `is ${JSON.stringify((value as RouteSpec).name)}, stored as route ${JSON.stringify(name)}` })
}

/**
 * Every problem of a whole state read from the store: the schema of each resource, then
 * `validateState`. The schema checks run in slices of about `sliceMs`, yielding to the event
 * loop in between, as the whole compile that follows does (10,000 routes: ~15 ms of checks).
 */
export async function storedStateProblems(state: State, sliceMs = 2): Promise<Problem[]> {
  const out: Problem[] = []
  if (!Number.isSafeInteger(state.revision) || state.revision < 0) out.push({ path: 'revision', message: 'must be a non-negative integer' })
  let until = performance.now() + sliceMs
  let checked = 0
  const check = async (kind: ResourceKind, name: string, value: unknown, at: PathSegment[]) => {
    resourceProblems(kind, name, value, at, out)
    if ((++checked & 63) === 0 && performance.now() > until) {
      await new Promise<void>((resolve) => setImmediate(resolve))
      until = performance.now() + sliceMs
    }
  }
  for (const kind of ['upstreams', 'flags', 'rollouts'] as const) {
    const record = state[kind] as Record<string, unknown>
    for (const name of Object.keys(record)) await check(kind, name, record[name], [kind, name])
  }
  for (let i = 0; i < state.routes.length; i++) {
    const route = state.routes[i] as RouteSpec | null
    await check('routes', route?.name ?? '', route, ['routes', i])
  }
  // Meaning is judged only on a well-formed state (the schema problems say the rest).
  if (out.length === 0) out.push(...validateState(state))
  return out.slice(0, PROBLEMS_MAX)
}

/**
 * Every problem of `next`, which is `before` (a state that passed these checks) with `delta`
 * from the store applied: the schema of each resource the delta brings, then `validateChange`
 * on what it touches. Its cost follows the size of the change, not of the state (but for a
 * change of the route order, whose names are checked for duplicates in one pass).
 */
export function storedChangeProblems(next: State, delta: Delta, before: State): Problem[] {
  const out: Problem[] = []
  for (const kind of RESOURCE_KINDS) {
    const changed = delta[kind] as Record<string, unknown>
    for (const name of Object.keys(changed)) {
      const value = changed[name]
      if (value === null) continue
      const at: PathSegment[] = kind === 'routes' ? ['routes', Math.max(0, routePosition(next.routes, name))] : [kind, name]
      resourceProblems(kind, name, value, at, out)
    }
  }
  if (delta.order !== undefined && new Set(delta.order).size !== delta.order.length) {
    out.push({ path: 'routes', message: 'the stored route order names a route twice' })
  }
  if (out.length === 0) out.push(...validateChange(next, touchedOf(delta), before))
  return out.slice(0, PROBLEMS_MAX)
}

/** The problems as one message: `path: message; ...`. */
export function describeProblems(problems: readonly Problem[]): string {
  return problems.map((p) => `${p.path}: ${p.message}`).join('; ')
}
