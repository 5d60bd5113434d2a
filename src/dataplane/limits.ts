/**
 * listen.limits on the node:http server: the options it is made with, what it is told on a
 * reload, and the listeners that answer and count the connections it cuts. Per-request bounds
 * (body idle, maxBodyBytes) live in forward.ts; this file runs per connection, never per request.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { ERRORS, errorBody } from '../errors.js'
import { rawHeader } from './headers.js'
import type { Resources } from './resources.js'
import type { EdgeLimits } from './server.js'

/**
 * node:http checks headersTimeout on a timer (every 30 s by default), so a head could take the
 * bound plus 30 s: checked every tenth of the bound instead (10 ms to 1 s), which keeps the
 * slack within 10 % (1 s at most) for a sweep over the connections that are mid-head.
 */
export function checkIntervalMs(headersTimeoutMs: number): number {
  return Math.min(1_000, Math.max(10, Math.floor(headersTimeoutMs / 10)))
}

/** The node:http (and node:https) options that carry the limits. */
export function serverOptions(l: EdgeLimits, tls: boolean): Record<string, number> {
  const options: Record<string, number> = {
    // Long uploads and slow streams are the upstream's business (bodyIdleTimeoutMs bounds a
    // stalled one); Node's 300 s default would cut them.
    requestTimeout: 0,
    headersTimeout: l.headersTimeoutMs,
    connectionsCheckingInterval: checkIntervalMs(l.headersTimeoutMs),
    keepAliveTimeout: l.keepAliveTimeoutMs,
  }
  // A TLS handshake comes before the head (whose clock starts once it is done): the same bound
  // for it, instead of node:tls's 120 s, or a slow handshake would be a slowloris of its own.
  if (tls && l.headersTimeoutMs > 0) options['handshakeTimeout'] = l.headersTimeoutMs
  return options
}

const TIMEOUT_BODY = errorBody('REQUEST_TIMEOUT')
const TIMEOUT_RESPONSE = Buffer.from(
  `HTTP/1.1 ${ERRORS.REQUEST_TIMEOUT.status} Request Timeout\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(TIMEOUT_BODY)}\r\nconnection: close\r\n\r\n${TIMEOUT_BODY}`,
  'latin1',
)
/** What node:http writes on a client error when nobody listens for it (kept byte for byte). */
const NODE_RESPONSES: Record<string, Buffer> = {
  HPE_HEADER_OVERFLOW: Buffer.from('HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n', 'latin1'),
  HPE_CHUNK_EXTENSIONS_OVERFLOW: Buffer.from('HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n\r\n', 'latin1'),
}
const NODE_BAD_REQUEST = Buffer.from('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n', 'latin1')

/**
 * The listeners that go with the limits, on a new server: connections over maxConnections are
 * counted ('drop': node:net closed them before anyone saw them), and a head that missed
 * headersTimeoutMs gets our JSON 408 (node:http's own is bodiless) and is counted. Every other
 * client error gets exactly what node:http would have written.
 */
export function watchLimits(server: Server, l: EdgeLimits, res: Resources): void {
  setMaxConnections(server, l.maxConnections)
  server.on('drop', () => res.limited.max_connections++)
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
    if (timeout) res.limited.headers_timeout++
    // As node:http does: answer only when no response on this connection has begun (a
    // pipelined request's), so the peer never gets a reply inside another one.
    const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage
    if (socket.writable && (inFlight == null || !inFlight.headersSent)) {
      socket.write(timeout ? TIMEOUT_RESPONSE : (NODE_RESPONSES[err.code ?? ''] ?? NODE_BAD_REQUEST))
    }
    socket.destroy(err)
  })
}

/**
 * Applies changed limits to servers that already run (a reload): the headers and keep-alive
 * bounds to their open connections too, maxConnections to the next connection. Set at creation
 * only: the check interval and the TLS handshake bound (the next listener move takes the new ones).
 */
export function applyLimits(servers: readonly Server[], l: EdgeLimits): void {
  for (const server of servers) {
    server.headersTimeout = l.headersTimeoutMs
    server.keepAliveTimeout = l.keepAliveTimeoutMs
    setMaxConnections(server, l.maxConnections)
  }
}

function setMaxConnections(server: Server, max: number | undefined): void {
  // node:net refuses past `maxConnections` when it is set; undefined: no bound.
  ;(server as { maxConnections: number | undefined }).maxConnections = max
}

/**
 * Whether the request's Content-Length says more than `max` bytes. Node's parser has already
 * refused a repeated or malformed Content-Length, and a chunked body has none: counted as it
 * comes (forward.ts).
 */
export function declaredOver(req: IncomingMessage, max: number): boolean {
  const value = rawHeader(req.rawHeaders, 'content-length')
  return value !== undefined && Number(value) > max
}
