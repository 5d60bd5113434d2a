/**
 * Logs the data plane's rare events (ejections, returns, health flips) (published on `node:diagnostics_channel`, since the data
 * plane never logs) with the process logger. Several instances may run in one process (tests,
 * the demo): each listener logs only the events of its own data plane's resources.
 *
 * Rate-limited: ejections are rare by nature, but a tiny `baseEjectionMs` over many targets
 * could make them frequent; past MAX_PER_SECOND lines in a second the rest are counted, and the
 * count is logged with the next line that gets through.
 */
import diagnostics from 'node:diagnostics_channel'
import {
  TARGET_EJECTED,
  TARGET_HEALTH,
  TARGET_RETURNED,
  type TargetEjectedEvent,
  type TargetHealthEvent,
  type TargetReturnedEvent,
} from '../dataplane/events.js'
import type { Logger } from '../log.js'

const MAX_PER_SECOND = 20

/** Subscribes; the returned function unsubscribes (call it when the instance closes). */
export function logDataplaneEvents(scope: object, log: Logger): () => void {
  let windowStart = 0
  let inWindow = 0
  let suppressed = 0
  /** Whether a line may be written now; logs how many were dropped before it. */
  const admit = (): boolean => {
    const now = Date.now()
    if (now - windowStart >= 1_000) {
      windowStart = now
      inWindow = 0
    }
    if (inWindow >= MAX_PER_SECOND) {
      suppressed++
      return false
    }
    inWindow++
    if (suppressed > 0) {
      log.warn({ suppressed }, `${suppressed} target ejection/return events not logged (more than ${MAX_PER_SECOND} a second)`)
      suppressed = 0
    }
    return true
  }

  const onEjected = (message: unknown): void => {
    const e = message as TargetEjectedEvent
    if (e.scope !== scope || !admit()) return
    const reason = e.reason === 'consecutive_5xx' ? '5xx' : 'gateway failures'
    log.warn(
      { upstream: e.upstream, target: e.target, reason: e.reason, consecutive: e.consecutive, ejectionMs: e.durationMs, until: new Date(e.until).toISOString() },
      `target ${e.upstream}/${e.target} ejected for ${e.durationMs} ms: ${e.consecutive} consecutive ${reason}`,
    )
  }
  const onReturned = (message: unknown): void => {
    const e = message as TargetReturnedEvent
    if (e.scope !== scope || !admit()) return
    log.info({ upstream: e.upstream, target: e.target, ejectedMs: e.ejectedMs }, `target ${e.upstream}/${e.target} back after its ejection`)
  }
  const onHealth = (message: unknown): void => {
    const e = message as TargetHealthEvent
    if (e.scope !== scope || !admit()) return
    if (e.healthy) log.info({ upstream: e.upstream, target: e.target, healthy: true }, `target ${e.upstream}/${e.target} is healthy`)
    else log.warn({ upstream: e.upstream, target: e.target, healthy: false, reason: e.reason }, `target ${e.upstream}/${e.target} is unhealthy: ${e.reason}`)
  }
  diagnostics.subscribe(TARGET_EJECTED, onEjected)
  diagnostics.subscribe(TARGET_RETURNED, onReturned)
  diagnostics.subscribe(TARGET_HEALTH, onHealth)
  return () => {
    diagnostics.unsubscribe(TARGET_EJECTED, onEjected)
    diagnostics.unsubscribe(TARGET_RETURNED, onReturned)
    diagnostics.unsubscribe(TARGET_HEALTH, onHealth)
  }
}
