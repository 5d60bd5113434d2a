/**
 * Requests the proxy judges by itself and refuses with a 4xx: they never reach an upstream and
 * never count against one, so a client cannot hurt an upstream's record (its error counts feed
 * outlier detection and rollout analysis).
 */
import { isIPv6, type Socket } from 'node:net'
import { ERRORS, errorBody } from '../errors.js'

/**
 * Why a request was refused; the label of `switchyard_bad_requests_total`.
 * - `host_repeated`: more than one Host field line (RFC 9112 §3.2: 400)
 * - `host_invalid`: a Host that is not `host [":" port]` per RFC 3986 §3.2.2 (RFC 9112 §3.2: 400)
 * - `connect`: a CONNECT request; a reverse proxy opens no tunnels (405)
 * - `unsendable`: the HTTP client refused to send the request because of what the client sent
 * - `path_ambiguous`: a path a backend may resolve differently from the proxy (a backslash, an
 *   encoded slash in a dot segment, `..;`), on a route without `preservePath` (400)
 */
export type RejectReason = 'host_repeated' | 'host_invalid' | 'connect' | 'unsendable' | 'path_ambiguous'

export const REJECT_REASONS: readonly RejectReason[] = ['host_repeated', 'host_invalid', 'connect', 'unsendable', 'path_ambiguous']

/** Plain counters per reason, incremented by the data plane and read by /metrics. */
export function rejectCounters(): Record<RejectReason, number> {
  return { host_repeated: 0, host_invalid: 0, connect: 0, unsendable: 0, path_ambiguous: 0 }
}

// RFC 3986 §3.2.2 reg-name characters: unreserved / sub-delims ('%' is checked apart).
const REG_NAME = new Uint8Array(128)
for (const c of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&\'()*+,;=') REG_NAME[c.charCodeAt(0)] = 1
const HEX = /^[0-9A-Fa-f]$/
// IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
const IPV_FUTURE = /^[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+$/

function isDigits(s: string, from: number): boolean {
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 48 || c > 57) return false
  }
  return true
}

/**
 * True when `value` is a valid Host field value: `uri-host [":" port]` (RFC 9110 §7.2, RFC 3986
 * §3.2.2–3.2.3): a reg-name (unreserved, sub-delims, `%XX`; IPv4 addresses are reg-names too),
 * or an IP literal in brackets (IPv6 or IPvFuture), then an optional port of digits only.
 * Empty is valid (RFC 9112 §3.2: a target without authority sends an empty Host).
 * Costs one scan of the value with a table lookup per character.
 */
export function validHost(value: string): boolean {
  let i = 0
  if (value.charCodeAt(0) === 91 /* [ */) {
    const close = value.indexOf(']')
    if (close < 0) return false
    const literal = value.slice(1, close)
    // isIPv6 accepts a zone (`fe80::1%eth0`), which RFC 3986 has no place for.
    const ipv6 = !literal.includes('%') && isIPv6(literal)
    if (!ipv6 && !IPV_FUTURE.test(literal)) return false
    i = close + 1
  } else {
    for (; i < value.length; i++) {
      const c = value.charCodeAt(i)
      if (c === 58 /* : */) break
      if (c < 128 && REG_NAME[c] === 1) continue
      if (c === 37 /* % */ && HEX.test(value.charAt(i + 1)) && HEX.test(value.charAt(i + 2))) {
        i += 2
        continue
      }
      return false
    }
  }
  if (i === value.length) return true
  return value.charCodeAt(i) === 58 && isDigits(value, i + 1)
}

/** Methods every route forwards: all but CONNECT. */
export const ALLOWED_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE'

/**
 * Answers a CONNECT (which node:http hands over as a raw socket) with 405 and `Allow`, in the
 * usual JSON error shape, then closes the connection: a reverse proxy opens no tunnels.
 */
export function refuseConnect(socket: Socket): void {
  const body = errorBody('METHOD_NOT_ALLOWED', 'CONNECT is not supported: this is a reverse proxy, it opens no tunnels')
  socket.on('error', () => socket.destroy())
  // Read and drop whatever the client sends on, so closing does not reset the connection
  // before it read the answer.
  socket.resume()
  socket.end(
    `HTTP/1.1 ${ERRORS.METHOD_NOT_ALLOWED.status} Method Not Allowed\r\nallow: ${ALLOWED_METHODS}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    () => socket.destroy(),
  )
}
