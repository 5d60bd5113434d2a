/** What workers and the primary say to each other over the cluster IPC channel (besides store calls). */

/**
 * A worker is started and takes connections: the primary counts it ready (and resets its slot's
 * failure count) and hands it connections from then on.
 */
export interface ReadyMessage {
  sy: 'ready'
}

/** primary → worker: a connection the primary accepted on one of its ports (the socket rides along) */
export interface ConnectionMessage {
  sy: 'conn'
  port: 'proxy' | 'admin'
  id: number
}

/** worker → primary: whether it took connection `id` (a stopping worker does not) */
export interface ConnectionTakenMessage {
  sy: 'conn-taken'
  id: number
  taken: boolean
}

/** A worker could not start; sent just before it exits 1, so the primary can say why. */
export interface FailedMessage {
  sy: 'failed'
  reason: string
}

/** A worker stopped taking connections (it is stopping): the primary hands it no more. */
export interface ClosingMessage {
  sy: 'closing'
}

/** The primary asks a worker to stop gracefully because a new one replaced it (SIGHUP). */
export interface RetireMessage {
  sy: 'retire'
}

export function isMessage<T extends { sy: string }>(m: unknown, sy: T['sy']): m is T {
  return typeof m === 'object' && m !== null && (m as { sy?: unknown }).sy === sy
}
