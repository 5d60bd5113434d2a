/** What workers and the primary say to each other over the cluster IPC channel (besides store calls). */

/** A worker listens: the primary counts it ready (and resets its slot's failure count). */
export interface ReadyMessage {
  sy: 'ready'
  proxyUrl: string
  adminUrl: string
}

/** A worker could not start; sent just before it exits 1, so the primary can say why. */
export interface FailedMessage {
  sy: 'failed'
  reason: string
}

/** The primary asks a worker to stop gracefully because a new one replaced it (SIGHUP). */
export interface RetireMessage {
  sy: 'retire'
}

export function isMessage<T extends { sy: string }>(m: unknown, sy: T['sy']): m is T {
  return typeof m === 'object' && m !== null && (m as { sy?: unknown }).sy === sy
}
