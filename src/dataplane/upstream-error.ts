/**
 * The one place that maps transport faults (undici and Node codes) to switchyard's codes and
 * decides what may be retried. The original error is kept as `cause` where one is reported.
 */
import type { ProxyErrorCode } from './stats.js'

/** Faults that mean "no connection could be made": nothing was sent, any method may retry. */
const CONNECT_FAILURES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EPIPE',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
])

/**
 * The TLS handshake failed: the certificate was refused (OpenSSL's verify codes, a name that
 * does not match) or the two sides could not agree (`ERR_SSL_*`, e.g. TLS spoken to a plain
 * HTTP port). Nothing was sent: a connect-class failure, answered with UPSTREAM_TLS_ERROR.
 */
const TLS_VERIFY_FAILURES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_TLS_HANDSHAKE_TIMEOUT',
])

export function isTlsFailure(err: unknown): boolean {
  const code = codeOf(err)
  return TLS_VERIFY_FAILURES.has(code) || code.startsWith('ERR_SSL_')
}

/** What a target's health shows after a TLS failure: `tls: <code>: <message>`; undefined for other faults. */
export function tlsReason(err: unknown): string | undefined {
  if (!isTlsFailure(err)) return undefined
  const e = err as { message?: unknown; cause?: { message?: unknown } }
  const message = typeof e.message === 'string' ? e.message : typeof e.cause?.message === 'string' ? e.cause.message : ''
  return `tls: ${codeOf(err)}${message === '' ? '' : `: ${message}`}`
}

/** The pool was closed under us by a table swap: not the target's fault. */
const POOL_GONE = new Set(['UND_ERR_CLOSED', 'UND_ERR_DESTROYED'])

/** After the request went out: a reset before headers may be retried for idempotent methods. */
const RESETS = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET'])

export type Fault =
  | 'connect' // no connection: retry on another target, mark this one failed
  | 'pool-gone' // retry on another target, nothing to mark
  | 'reset' // sent, then reset before headers: retry only if idempotent and body untouched
  | 'headers-timeout'
  | 'client' // undici refused the request for what the client sent: 400, never the upstream's fault
  | 'other'

/**
 * What undici says when it refuses a request because of its method, path or headers, all of
 * which come from the client (Request's argument checks: `invalid request path`, `duplicate
 * host header`, `invalid x-foo header`, `invalid header key`...). Its complaints about our own
 * options (`invalid headersTimeout`, `invalid bodyTimeout`...) do not match: those are ours.
 */
const CLIENT_INPUT = /^(?:(?:invalid|duplicate) [^ ]+ header|invalid header key|invalid request (?:path|method)|path must be .*|headers must be .*)$/

/**
 * True when undici refused to send the request because of what the client sent, judged by the
 * error's code and what it complains about, not by where it was thrown:
 * - `UND_ERR_INVALID_ARG` about the method, path or a header (see CLIENT_INPUT);
 * - `UND_ERR_NOT_SUPPORTED` (a header undici will not send, such as Expect);
 * - `UND_ERR_REQ_CONTENT_LENGTH_MISMATCH` (the request body does not match its Content-Length).
 */
export function refusedForClientInput(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null
  const code = e?.code
  if (code === 'UND_ERR_INVALID_ARG') return typeof e!.message === 'string' && CLIENT_INPUT.test(e!.message)
  return code === 'UND_ERR_NOT_SUPPORTED' || code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH'
}

function codeOf(err: unknown): string {
  const e = err as { code?: unknown; cause?: { code?: unknown } } | null
  const code = e?.code ?? e?.cause?.code
  return typeof code === 'string' ? code : ''
}

export function classify(err: unknown, sent: boolean): Fault {
  const code = codeOf(err)
  if (POOL_GONE.has(code)) return 'pool-gone'
  if (refusedForClientInput(err)) return 'client'
  if (!sent && (CONNECT_FAILURES.has(code) || isTlsFailure(err))) return 'connect'
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return 'headers-timeout'
  if (sent && RESETS.has(code)) return 'reset'
  return 'other'
}

/** What the client gets when no attempt succeeded. */
export function errorCodeFor(fault: Fault, err: unknown): ProxyErrorCode {
  if (fault === 'headers-timeout' || codeOf(err) === 'UND_ERR_CONNECT_TIMEOUT') return 'UPSTREAM_TIMEOUT'
  if (fault === 'connect' && isTlsFailure(err)) return 'UPSTREAM_TLS_ERROR'
  return 'UPSTREAM_ERROR'
}

/** RFC 9110 §9.2.2 idempotent methods. */
export function isIdempotent(method: string): boolean {
  switch (method) {
    case 'GET':
    case 'HEAD':
    case 'OPTIONS':
    case 'TRACE':
    case 'PUT':
    case 'DELETE':
      return true
    default:
      return false
  }
}
