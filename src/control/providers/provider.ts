/**
 * Target providers: inputs to the compiler that are not store writes (DNS discovery). The
 * follower compiles the store's state *plus* what the providers hold now, so a provider's
 * changes reach the data plane without a revision, an audit event or a store round trip,
 * and never show in `GET /api/state` (the revisioned state).
 */
import type { State, Target } from '../../config/schema.js'

/** Where a target that is not in the store came from. */
export type TargetSource = 'dns'

/** A target held by a provider; `state` is `active`, or `draining` once it vanished from its source. */
export interface ProvidedTarget extends Target {
  readonly source: TargetSource
}

/** A source of targets besides the store, read at every compile. */
export interface TargetProvider {
  /** The provider's targets of `upstream` now (empty when it has none). Must not change the state. */
  targets(upstream: string): readonly ProvidedTarget[]
}

/** Whether `t` came from a provider (it carries a `source`) rather than from the store. */
export function isProvided(t: Target): t is ProvidedTarget {
  return (t as Partial<ProvidedTarget>).source !== undefined
}

/**
 * The state the data plane compiles: `state` with each upstream's provided targets appended.
 * A target of the store wins over a provided one with the same id (the store is the operator's
 * explicit word). Returns `state` itself when no provider adds anything, so an instance without
 * discovery compiles exactly what it did before.
 */
export function effectiveState(state: State, providers: readonly TargetProvider[]): State {
  if (providers.length === 0) return state
  let upstreams: State['upstreams'] | undefined
  for (const [name, upstream] of Object.entries(state.upstreams)) {
    const extra = providers.flatMap((p) => p.targets(name))
    if (extra.length === 0) continue
    const ids = new Set(upstream.targets.map((t) => t.id))
    const added: Target[] = []
    for (const t of extra) {
      if (ids.has(t.id)) continue
      ids.add(t.id)
      added.push(t)
    }
    if (added.length === 0) continue
    upstreams ??= { ...state.upstreams }
    upstreams[name] = { ...upstream, targets: [...upstream.targets, ...added] }
  }
  return upstreams === undefined ? state : { ...state, upstreams }
}
