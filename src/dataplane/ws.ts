/**
 * HTTP/1.1 Upgrade: a WebSocket handshake (or a protocol the route lists in `upgrades`) is sent
 * to the chosen target, and the connection becomes a two-way tunnel only once the target
 * answered `101 Switching Protocols`, as nginx and Envoy do. Until then the connection is HTTP:
 * the bytes the client sent after its handshake wait (they are the new protocol's only after a
 * 101), and any other answer is relayed as an ordinary response, after which the connection
 * closes, so a refused handshake can never carry a second, unchecked request to the target.
 *
 * Every other request that asks for an upgrade is served as a plain request without it, and the
 * connection closes after the answer: node:http has already handed this connection over (its
 * parser is gone), so nothing the client sent after that request is ever read as a request.
 *
 * The handshake is the data plane's, like a plain request's: the connect is bounded by the
 * upstream's `connectTimeoutMs` (and retried on another target when it fails), the answer by
 * `headersTimeoutMs`, and the answer is parsed by node:http's client. Sockets are tracked per
 * target so a drain can close them after `drainTimeoutMs`; a tunnel with no byte either way for
 * `tunnelIdleTimeoutMs` is closed.
 */
import { IncomingMessage, request as httpRequest, ServerResponse, type ClientRequest } from 'node:http'
import { connect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { ERRORS, errorBody, type ErrorCode } from '../errors.js'
import { pickTarget } from './balance.js'
import { sendError } from './forward.js'
import { responseHeaders, type Forwarding } from './headers.js'
import { routeRequest } from './match.js'
import { recordFailure, recordResponse } from './outlier.js'
import { tlsOptions, type Resources } from './resources.js'
import type { ProxyErrorCode } from './stats.js'
import type { Choice, CTarget, RoutingTable } from './table.js'
import { tlsReason } from './upstream-error.js'

type Handler = (req: IncomingMessage, res: ServerResponse) => void

function rawError(socket: Socket, code: ErrorCode): void {
  const body = errorBody(code)
  socket.write(
    `HTTP/1.1 ${ERRORS[code].status} ${code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  )
  // Not end() alone: the server's sockets allow half-open, and the client may never close its side.
  socket.destroySoon()
}

/**
 * Whether this request is tunnelled on its route: every protocol its `Upgrade` names is
 * `websocket` or one of the route's `upgrades` (case-insensitive), and it has no body (a
 * handshake has none; a body would have to be read as HTTP first, so such a request is plain).
 */
export function tunnels(choice: Choice, req: IncomingMessage): boolean {
  const h = req.headers
  if (h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0')) return false
  const value = h.upgrade
  if (value === undefined) return false
  for (const part of value.split(',')) {
    const protocol = part.trim().toLowerCase()
    if (protocol !== 'websocket' && choice.upgrades?.has(protocol) !== true) return false
  }
  return true
}

/**
 * Runs `fn` once the answers node:http still writes on this connection (pipelined requests
 * before the upgrade) are done: nothing is written in the middle of one of them.
 */
export function afterPending(socket: Socket, fn: () => void): void {
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage
  if (inFlight == null) return fn()
  // node:http's own 'finish' listener (registered first) detaches the response before this runs.
  inFlight.once('finish', () => afterPending(socket, fn))
}

/**
 * Serves an upgrade request that is not tunnelled as a plain request (the upgrade dropped:
 * Upgrade and Connection are hop-by-hop), on a connection node:http has handed over: the
 * response is made here, the body (Content-Length only) is read from `head` and the socket,
 * and the connection closes after the answer. Whatever follows the request is never read.
 */
export function servePlain(upgrade: IncomingMessage, socket: Socket, head: Buffer, handle: Handler): void {
  socket.on('error', () => socket.destroy())
  // node:http ended `upgrade` at its head (an upgrade's body is the new protocol's): a new
  // message with the same head carries the body, if any.
  const req = new IncomingMessage(socket)
  req.method = upgrade.method
  req.url = upgrade.url
  req.httpVersionMajor = upgrade.httpVersionMajor
  req.httpVersionMinor = upgrade.httpVersionMinor
  req.httpVersion = upgrade.httpVersion
  req.rawHeaders = upgrade.rawHeaders
  req.headers = upgrade.headers
  const res = new ServerResponse(req)
  res.shouldKeepAlive = false
  res.assignSocket(socket)
  res.once('finish', () => socket.destroySoon())
  const h = req.headers
  // What node:http answers itself on a request it parses (requireHostHeader).
  if (req.httpVersion === '1.1' && h.host === undefined) return sendError(res, 'BAD_REQUEST', true)
  // A chunked body would need a chunked parser here; refused, as a request whose framing the proxy does not read.
  if (h['transfer-encoding'] !== undefined) return sendError(res, 'BAD_REQUEST', true)
  let left = h['content-length'] === undefined ? 0 : Number(h['content-length'])
  const end = (): void => {
    req.complete = true
    req.push(null)
  }
  const take = (chunk: Buffer): void => {
    if (chunk.length < left) {
      left -= chunk.length
      if (!req.push(chunk)) socket.pause()
      return
    }
    // The body's last bytes; the rest of the chunk (and of the connection) is never read.
    socket.off('data', take)
    req.push(chunk.subarray(0, left))
    left = 0
    end()
  }
  if (left === 0) end()
  else {
    if (head.length > 0) take(head)
    // IncomingMessage._read resumes the socket when the body is wanted again.
    if (left > 0) socket.on('data', take)
  }
  handle(req, res)
  // As the server's checkContinue does: the body is asked for once the request is on its way.
  if (left > 0 && /100-continue/i.test(h.expect ?? '') && !res.writableEnded) res.writeContinue()
}

/** Methods node:http's client sends without a body when none is declared (the others get a chunked one). */
const BODYLESS = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE'])

/** The handshake has no body (`tunnels`): said with Content-Length: 0 where node:http would send an empty chunked one. */
function headersFor(req: IncomingMessage, headers: string[]): string[] {
  if (BODYLESS.has(req.method ?? 'GET') || req.headers['content-length'] !== undefined) return headers
  return [...headers, 'content-length', '0']
}

/** Connecting to a target; waiting for its answer; relaying a non-101 answer; a tunnel; over. */
const CONNECTING = 0
const AWAITING = 1
const RELAYING = 2
const PIPING = 3
const DONE = 4

/**
 * Tunnels the upgrade when its route allows it (`tunnels`) and returns true; false, touching
 * nothing, when the request is to be served as a plain one (no route, refused, or an upgrade
 * the route does not tunnel).
 */
export function proxyUpgrade(
  table: RoutingTable,
  resources: Resources,
  req: IncomingMessage,
  client: Socket,
  head: Buffer,
  fwd: Forwarding | undefined,
  tunnelIdleTimeoutMs: number,
): boolean {
  const { path, head: reqHead, choice, upstream: routedUpstream } = routeRequest(table, req, true, fwd)
  if (choice === undefined || !tunnels(choice, req)) return false
  client.on('error', () => client.destroy())
  const upstream = routedUpstream!
  const t0 = performance.now()

  const fail = (code: ProxyErrorCode): void => {
    choice.stats.recordError(code, ERRORS[code].status, performance.now() - t0)
    rawError(client, code)
  }
  const tried: CTarget[] = []
  let retriesLeft = upstream.retries
  let lastError: ProxyErrorCode = 'UPSTREAM_ERROR'

  const attempt = (): void => {
    const target = pickTarget(upstream, tried)
    if (target === undefined) return fail(tried.length === 0 ? 'NO_HEALTHY_TARGET' : lastError)
    const rt = target.rt
    const tls = target.tls
    const conn = tls === null ? connect({ host: target.host, port: target.port }) : tlsConnect({ host: target.host, port: target.port, ...tlsOptions(tls) })
    // Over TLS the handshake request waits for the TLS handshake (and its certificate check).
    const ready = tls === null ? 'connect' : 'secureConnect'
    let tlsFailure: string | undefined
    let phase = CONNECTING
    let timedOut = false
    const expire = (): void => {
      timedOut = true
      conn.destroy()
    }
    let timer = setTimeout(expire, upstream.connectTimeoutMs)
    let answer: IncomingMessage | null = null

    const answered = (status: number): void => {
      clearTimeout(timer)
      choice.stats.record(status, performance.now() - t0)
      recordResponse(upstream, rt, status)
    }

    // 101: the status line and headers as the target sent them (Connection and Upgrade are the
    // point), then the two sockets are piped; the client's held bytes go first.
    const onUpgrade = (res: IncomingMessage, socket: Socket, upHead: Buffer): void => {
      phase = PIPING
      answered(101)
      let lines = `HTTP/1.1 101 ${res.statusMessage ?? 'Switching Protocols'}\r\n`
      for (let i = 0; i < res.rawHeaders.length; i += 2) lines += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`
      client.write(lines + '\r\n', 'latin1')
      if (upHead.length > 0) client.write(upHead)
      if (head.length > 0) socket.write(head)
      // A socket's timeout counts reads and writes: the client's sees every byte either way.
      client.setTimeout(tunnelIdleTimeoutMs, () => client.destroy())
      socket.pipe(client)
      client.pipe(socket)
    }

    // Any other answer: relayed as an ordinary response (hop-by-hop headers removed), and the
    // connection closes after it; the bytes held back are dropped, never sent anywhere.
    const onResponse = (res: IncomingMessage): void => {
      phase = RELAYING
      answer = res
      answered(res.statusCode ?? 502)
      rt.websockets.delete(client)
      const out = new ServerResponse(req)
      out.shouldKeepAlive = false
      out.assignSocket(client)
      out.once('finish', () => {
        client.destroySoon()
        conn.destroy()
      })
      const headers: string[] = []
      responseHeaders(
        res.rawHeaders.map((s) => Buffer.from(s, 'latin1')),
        headers,
      )
      out.writeHead(res.statusCode ?? 502, headers)
      res.pipe(out)
      // Cut mid-body: so is the client's copy.
      res.once('close', () => {
        if (!res.complete) client.destroy()
      })
    }

    conn.once(ready, () => {
      clearTimeout(timer)
      if (client.destroyed) {
        phase = DONE
        return void conn.destroy()
      }
      let up: ClientRequest
      try {
        // The socket is ours (connected, TLS checked; with createConnection and no agent,
        // node:http uses it alone and pools nothing); the request's head comes from the same
        // header list a plain request's does. node:http parses the answer.
        up = httpRequest({ method: req.method, path, headers: headersFor(req, reqHead.headers), createConnection: () => conn })
      } catch {
        // node:http refused to send what the client sent; nothing reached the target.
        phase = DONE
        conn.destroy()
        resources.rejected.unsendable++
        return rawError(client, 'BAD_REQUEST')
      }
      phase = AWAITING
      timer = setTimeout(expire, upstream.headersTimeoutMs)
      rt.websockets.add(client)
      resources.wsTargets.add(rt)
      client.once('close', () => {
        rt.websockets.delete(client)
        // Gone before the upstream answered: the client's doing, counted as a cut (class 0).
        if (phase === AWAITING) choice.stats.record(0, performance.now() - t0)
        phase = DONE
        answer?.destroy()
        conn.destroy()
      })
      up.on('upgrade', onUpgrade)
      up.on('response', onResponse)
      // The socket's 'close' below does the work (not HTTP, cut before an answer, timed out).
      up.on('error', () => conn.destroy())
      up.end()
    })
    // 'close' follows every error and does the work.
    conn.on('error', (err) => {
      if (phase === CONNECTING) tlsFailure = tlsReason(err)
    })
    conn.once('close', () => {
      clearTimeout(timer)
      if (phase === PIPING) return void client.destroy()
      // Relaying: the answer's own end (or its cut) decides; Done: nothing left to do.
      if (phase === RELAYING || phase === DONE) return
      recordFailure(upstream, rt, true)
      if (phase === CONNECTING) {
        resources.markFailed(rt, tlsFailure)
        tried.push(target)
        lastError = timedOut ? 'UPSTREAM_TIMEOUT' : tlsFailure !== undefined ? 'UPSTREAM_TLS_ERROR' : 'UPSTREAM_ERROR'
        if (retriesLeft-- > 0 && !client.destroyed) {
          upstream.counters.retries++
          return attempt()
        }
        return fail(lastError)
      }
      // Sent, but no (valid) answer came: nothing was relayed yet.
      phase = DONE
      rt.websockets.delete(client)
      fail(timedOut ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_ERROR')
    })
  }
  attempt()
  return true
}
