/**
 * What a table swap means for long-lived connections: a WebSocket whose target is no longer
 * active (draining, disabled or removed) is closed after its upstream's `drainTimeoutMs`, so a
 * drain finishes even with clients that never disconnect. If the target becomes active
 * again before then, the close is called off. Plain HTTP requests need nothing here: they finish
 * on the pool they started with, which `Resources.prune()` closes once they are done.
 */
import { DEFAULTS } from '../config/defaults.js'
import type { Resources } from './resources.js'
import type { RoutingTable } from './table.js'

export function drainWebsockets(table: RoutingTable, res: Resources): void {
  // Only the targets that ever carried a WebSocket: not a walk over 1,000 targets every swap.
  for (const rt of res.wsTargets) {
    if (rt.websockets.size === 0 && rt.wsDrainTimer === undefined) {
      res.wsTargets.delete(rt)
      continue
    }
    const upstream = table.upstreams.get(rt.upstream)
    const active = upstream?.byId.get(rt.id)?.active === true
    if (active) {
      if (rt.wsDrainTimer) clearTimeout(rt.wsDrainTimer)
      rt.wsDrainTimer = undefined
      continue
    }
    if (rt.websockets.size === 0 || rt.wsDrainTimer) continue
    rt.wsDrainTimer = setTimeout(() => {
      rt.wsDrainTimer = undefined
      for (const socket of rt.websockets) socket.destroy()
    }, upstream?.drainTimeoutMs ?? DEFAULTS.drainTimeoutMs)
    rt.wsDrainTimer.unref()
  }
}
