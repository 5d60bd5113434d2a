/**
 * Rare data-plane events, published on `node:diagnostics_channel` because the data plane never
 * logs: a control-side listener (control/dataplane-log.ts) turns them into log lines, and
 * anything else in the process (tests, an APM agent) may subscribe too.
 */
import diagnostics from 'node:diagnostics_channel'
import type { EjectionReason } from './stats.js'

export const TARGET_EJECTED = 'switchyard:target-ejected'
export const TARGET_RETURNED = 'switchyard:target-returned'
export const TARGET_HEALTH = 'switchyard:target-health'
export const ACCESS = 'switchyard:access'

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

/** A target's health flipped: its active check passed or failed enough times, a connect failed, a passive failure timed out. */
export interface TargetHealthEvent {
  scope: object
  upstream: string
  target: string
  healthy: boolean
  /** why it is not healthy (`health check failing`, `connect failed`); absent when healthy */
  reason?: string
}

const health = diagnostics.channel(TARGET_HEALTH)
const ejected = diagnostics.channel(TARGET_EJECTED)
const returned = diagnostics.channel(TARGET_RETURNED)

export function publishEjected(event: TargetEjectedEvent): void {
  if (ejected.hasSubscribers) ejected.publish(event)
}

export function publishReturned(event: TargetReturnedEvent): void {
  if (returned.hasSubscribers) returned.publish(event)
}

export function publishHealth(event: TargetHealthEvent): void {
  if (health.hasSubscribers) health.publish(event)
}

/** One sampled request, for the access log (`accessLog.sample`). */
export interface AccessEvent {
  scope: object
  /** epoch ms when the response closed */
  time: number
  method: string
  /** as the client sent it */
  url: string
  host: string
  /** 0 when the client left before any status was sent */
  status: number
  route: string
  upstream: string
  target: string | null
  ms: number
  client: string | null
}

const access = diagnostics.channel(ACCESS)

export function publishAccess(event: AccessEvent): void {
  if (access.hasSubscribers) access.publish(event)
}
