/**
 * The one catalogue of error codes switchyard answers with. Every error the proxy or the
 * admin API makes itself is `{"error":{"code","message","details?"}}` with the status below,
 * so clients and tests can rely on the code rather than parse messages.
 */
export const ERRORS = {
  // data plane
  NO_ROUTE: { status: 404, message: 'no route matches this request' },
  NO_HEALTHY_TARGET: { status: 503, message: 'no healthy target is available for this upstream' },
  UPSTREAM_ERROR: { status: 502, message: 'the upstream failed to answer' },
  UPSTREAM_TIMEOUT: { status: 504, message: 'the upstream did not answer in time' },
  UPSTREAM_TLS_ERROR: { status: 502, message: "the upstream's TLS handshake failed (its certificate was not accepted)" },
  // an upstream's circuitBreaker bound is reached: answered at once rather than queued
  UPSTREAM_OVERLOADED: { status: 503, message: 'the upstream has too many requests in flight; try again shortly' },
  // listen.limits: the request head or body did not arrive in time
  REQUEST_TIMEOUT: { status: 408, message: 'the request did not arrive in time' },
  // requests the proxy refuses itself, never sent upstream (a client cannot hurt an upstream's record)
  BAD_REQUEST: { status: 400, message: 'the request is malformed and was not forwarded' },
  // the proxy refuses CONNECT; the admin API answers it for a known path asked with another method (with `Allow`)
  METHOD_NOT_ALLOWED: { status: 405, message: 'this method is not allowed here' },
  // admin API
  VALIDATION_FAILED: { status: 400, message: 'the request is invalid' },
  UNAUTHORIZED: { status: 401, message: 'a valid bearer token is required' },
  FORBIDDEN: { status: 403, message: 'this token is not allowed to do this' },
  NOT_FOUND: { status: 404, message: 'not found' },
  CONFLICT: { status: 409, message: 'the change conflicts with the current state' },
  REVISION_MISMATCH: { status: 412, message: 'the revision in If-Match is not the current one' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'the request body is too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'the request body must be application/json' },
  STORE_UNAVAILABLE: { status: 503, message: 'the state store is unavailable' },
  SHUTTING_DOWN: { status: 503, message: 'this instance is shutting down' }, // /readyz after SIGTERM
  INTERNAL: { status: 500, message: 'internal error' },
} as const satisfies Record<string, { status: number; message: string }>

export type ErrorCode = keyof typeof ERRORS

/** One problem found in a config or a request, with the path it was found at (`routes[0].split.v3`). */
export interface Problem {
  path: string
  message: string
}

/** A typed error with a stable code; `details` carries per-field problems for VALIDATION_FAILED. */
export class SwitchyardError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly details: unknown[] | undefined

  constructor(code: ErrorCode, message?: string, options?: { details?: unknown[]; cause?: unknown }) {
    super(message ?? ERRORS[code].message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'SwitchyardError'
    this.code = code
    this.status = ERRORS[code].status
    this.details = options?.details
  }

  toJSON(): { error: { code: ErrorCode; message: string; details?: unknown[] } } {
    const error: { code: ErrorCode; message: string; details?: unknown[] } = { code: this.code, message: this.message }
    if (this.details !== undefined) error.details = this.details
    return { error }
  }
}

/** Formats problems the way `switchyard validate` prints them: `path: message`. */
export function formatProblem(p: Problem): string {
  return p.path === '' ? p.message : `${p.path}: ${p.message}`
}

/** Body bytes of an error answer; precomputed per code for the data plane's hot error paths. */
export function errorBody(code: ErrorCode, message?: string): string {
  return JSON.stringify({ error: { code, message: message ?? ERRORS[code].message } })
}
