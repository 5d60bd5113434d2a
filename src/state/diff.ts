/**
 * What differs between two states, resource by resource and field by field: the plan that
 * `PUT /api/state` answers and `switchyard ctl diff` prints (like `terraform plan`). Pure.
 */
import type { Touched } from './delta.js'
import type { State } from './schema.js'
import { formatPath, type PathSegment } from './path.js'

export type ResourceKind = 'upstream' | 'route' | 'flag'


/** One field that changed; `before` or `after` is left out when the field is not set on that side. */
export interface FieldChange {
  path: string
  before?: unknown
  after?: unknown
}

/**
 * One resource added, changed or removed (`after` of an added one, `before` of a removed one);
 * `kind: 'routes', op: 'order'` when routes kept in both states change places (which matters
 * where two routes tie on host and prefix length).
 */
export type ResourceChange =
  | { kind: ResourceKind; name: string; op: 'add'; after: unknown }
  | { kind: ResourceKind; name: string; op: 'change'; fields: FieldChange[] }
  | { kind: ResourceKind; name: string; op: 'remove'; before: unknown }
  | { kind: 'routes'; op: 'order'; before: string[]; after: string[] }

type Parts = Pick<State, 'upstreams' | 'routes' | 'flags'>

/** Every change that turns `before` into `after`, upstreams first, then routes, then flags. */
export function diffResources(before: Parts, after: Parts): ResourceChange[] {
  const routesOf = (s: Parts) => new Map(s.routes.map((r) => [r.name, r as unknown]))
  const out = [
    ...diffRecord('upstream', toMap(before.upstreams), toMap(after.upstreams)),
    ...diffRecord('route', routesOf(before), routesOf(after)),
  ]
  const order = orderChange(before.routes.map((r) => r.name), after.routes.map((r) => r.name))
  if (order !== undefined) out.push(order)
  out.push(...diffRecord('flag', toMap(before.flags), toMap(after.flags)))
  return out
}

/**
 * What a commit of `b` on top of `a` touches: the names of the resources `diffResources` finds
 * changed (rollout records too), and whether the sequence of route names differs.
 */
export function touchedBetween(a: State, b: State): Touched {
  const names = (changes: ResourceChange[], kind: ResourceKind) => changes.flatMap((c) => (c.kind === kind ? [c.name] : []))
  const changes = diffResources(a, b)
  const rollouts = diffRecord('rollout' as ResourceKind, toMap(a.rollouts), toMap(b.rollouts)).map((c) => (c as { name: string }).name)
  return {
    upstreams: names(changes, 'upstream'),
    routes: names(changes, 'route'),
    flags: names(changes, 'flag'),
    rollouts,
    order: a.routes.length !== b.routes.length || a.routes.some((r, i) => r.name !== b.routes[i]!.name),
  }
}

function toMap(record: Record<string, unknown>): Map<string, unknown> {
  return new Map(Object.keys(record).map((k) => [k, record[k]]))
}

function diffRecord(kind: ResourceKind, a: Map<string, unknown>, b: Map<string, unknown>): ResourceChange[] {
  const out: ResourceChange[] = []
  for (const [name, va] of a) {
    if (!b.has(name)) out.push({ kind, name, op: 'remove', before: va })
    else {
      const vb = b.get(name)
      // Shared objects (copy-on-write states) are equal without a walk.
      const fields = va === vb ? [] : diffValues(va, vb, [])
      if (fields.length > 0) out.push({ kind, name, op: 'change', fields })
    }
  }
  for (const [name, vb] of b) if (!a.has(name)) out.push({ kind, name, op: 'add', after: vb })
  return out
}

/** The routes both sides have, when they stand in another order (additions and removals aside). */
function orderChange(a: string[], b: string[]): ResourceChange | undefined {
  const inB = new Set(b)
  const inA = new Set(a)
  const before = a.filter((n) => inB.has(n))
  const after = b.filter((n) => inA.has(n))
  return before.every((n, i) => n === after[i]) ? undefined : { kind: 'routes', op: 'order', before, after }
}

/** Equal as values: key order aside, targets compared by id (in their order). */
export function sameValue(a: unknown, b: unknown): boolean {
  return diffValues(a, b, []).length === 0
}

const isPlain = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Targets are told apart by id, not by place: adding one first must not read as every target changing. */
function byId(v: unknown): Map<string, unknown> | undefined {
  if (!Array.isArray(v) || !v.every((t) => isPlain(t) && typeof t['id'] === 'string')) return undefined
  return new Map(v.map((t: Record<string, unknown>) => [t['id'] as string, t]))
}

function diffValues(a: unknown, b: unknown, at: PathSegment[]): FieldChange[] {
  if (a === b) return []
  if (isPlain(a) && isPlain(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])]
    return keys.flatMap((k) => {
      const [ha, hb] = [Object.hasOwn(a, k), Object.hasOwn(b, k)]
      if (ha && hb) return diffValues(a[k], b[k], [...at, k])
      return [ha ? { path: formatPath([...at, k]), before: a[k] } : { path: formatPath([...at, k]), after: b[k] }]
    })
  }
  const [ia, ib] = at[at.length - 1] === 'targets' ? [byId(a), byId(b)] : [undefined, undefined]
  if (ia !== undefined && ib !== undefined) {
    const changes = diffRecordFields(ia, ib, at)
    const order = [...ia.keys()].filter((id) => ib.has(id))
    const moved = [...ib.keys()].filter((id) => ia.has(id)).some((id, i) => id !== order[i])
    return moved ? [...changes, { path: formatPath([...at, 'order']), before: order, after: [...ib.keys()].filter((id) => ia.has(id)) }] : changes
  }
  if (Array.isArray(a) && Array.isArray(b) && a.length === b.length) return a.flatMap((x, i) => diffValues(x, b[i], [...at, i]))
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [{ path: formatPath(at), before: a, after: b }]
}

function diffRecordFields(a: Map<string, unknown>, b: Map<string, unknown>, at: PathSegment[]): FieldChange[] {
  const out: FieldChange[] = []
  for (const [k, va] of a) out.push(...(b.has(k) ? diffValues(va, b.get(k), [...at, k]) : [{ path: formatPath([...at, k]), before: va }]))
  for (const [k, vb] of b) if (!a.has(k)) out.push({ path: formatPath([...at, k]), after: vb })
  return out
}
