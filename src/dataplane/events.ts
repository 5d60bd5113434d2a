/**
 * Rare data-plane events, published on `node:diagnostics_channel` because the data plane never
 * logs: a control-side listener (control/dataplane-log.ts) turns them into log lines, and
 * anything else in the process (tests, an APM agent) may subscribe too.
 */
import diagnostics from 'node:diagnostics_channel'
import type { EjectionReason } from './stats.js'

export const TARGET_EJECTED = 'switchyard:target-ejected'
export const TARGET_RETURNED = 'switchyard:target-returned'

/** Outlier detection took a target out. */
export interface TargetEjectedEvent {
  /** the data plane's Resources: several instances may share one process */
  scope: object
  upstream: string
  target: string
  reason: EjectionReason
  /** failures in a row that triggered it */
  consecutive: number
  /** how long it stays out, ms */
  durationMs: number
  /** epoch ms when it comes back */
  until: number
  /** ejections in a row, the multiplier of the base ejection time */
  level: number
}

/** An ejected target came back by itself (its ejection time ran out). */
export interface TargetReturnedEvent {
  scope: object
  upstream: string
  target: string
  /** how long it was out, ms */
  ejectedMs: number
}

const ejected = diagnostics.channel(TARGET_EJECTED)
const returned = diagnostics.channel(TARGET_RETURNED)

export function publishEjected(event: TargetEjectedEvent): void {
  if (ejected.hasSubscribers) ejected.publish(event)
}

export function publishReturned(event: TargetReturnedEvent): void {
  if (returned.hasSubscribers) returned.publish(event)
}
