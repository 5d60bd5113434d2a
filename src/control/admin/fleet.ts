/**
 * Fleet-wide in-flight counts for one target, read from the instance registry (SPEC §7).
 * This instance's own count is read live from its data plane (the registry copy is up to one
 * heartbeat old); other instances are known only through their last heartbeat.
 */
import type { ControlPlane } from '../control-plane.js'

export interface FleetInflight {
  /** requests in flight to the target, summed over every live instance */
  inflight: number
  /**
   * false while some other instance has not yet reported having applied `minRevision`: its
   * count may predate the change (a request it started just before it applied a drain).
   */
  settled: boolean
}

export async function fleetInflight(control: ControlPlane, key: string, minRevision = 0): Promise<FleetInflight> {
  const local = control.inflight()[key] ?? 0
  let instances
  try {
    instances = await control.store.instances()
  } catch {
    // Store unreachable: the local count is all we can know.
    return { inflight: local, settled: true }
  }
  let inflight = local
  let settled = true
  for (const i of instances) {
    if (i.id === control.instanceId) continue
    inflight += i.inflight[key] ?? 0
    if (i.appliedRevision < minRevision) settled = false
  }
  return { inflight, settled }
}

/** How often a drain re-reads the registry: fast enough for "answers within ms", light on Redis. */
const POLL_MS = 10

/**
 * Waits until no live instance has a request in flight to `key` and every instance applied
 * `revision` (the drain), or until `waitMs` passed.
 */
export async function waitDrained(
  control: ControlPlane,
  key: string,
  revision: number,
  waitMs: number,
): Promise<{ drained: boolean; inflight: number }> {
  const deadline = Date.now() + waitMs
  for (;;) {
    const f = await fleetInflight(control, key, revision)
    if (f.inflight === 0 && f.settled) return { drained: true, inflight: 0 }
    if (Date.now() >= deadline) return { drained: false, inflight: f.inflight }
    await new Promise((r) => setTimeout(r, Math.min(POLL_MS, Math.max(1, deadline - Date.now()))))
  }
}
