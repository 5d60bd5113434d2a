/**
 * WebSocket (and any HTTP/1.1 Upgrade) proxying: the handshake is written to the chosen target
 * over a raw TCP connection and the two sockets are piped both ways, so frames pass untouched.
 * Sockets are tracked per target so a drain can close them after `drainTimeoutMs`.
 */
import type { IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import { ERRORS, errorBody, type ErrorCode } from '../errors.js'
import { pickTarget } from './balance.js'
import { routeRequest } from './match.js'
import type { Resources } from './resources.js'
import type { ProxyErrorCode } from './stats.js'
import type { CTarget, RoutingTable } from './table.js'

function rawError(socket: Socket, code: ErrorCode): void {
  const body = errorBody(code)
  socket.end(
    `HTTP/1.1 ${ERRORS[code].status} ${code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  )
}

export function proxyUpgrade(
  table: RoutingTable,
  resources: Resources,
  req: IncomingMessage,
  client: Socket,
  head: Buffer,
  adminTokens?: ReadonlySet<string>,
): void {
  client.on('error', () => client.destroy())
  const { path, head: reqHead, choice, reject } = routeRequest(table, req, true, adminTokens)
  if (reject !== null) {
    resources.rejected[reject]++
    return rawError(client, 'BAD_REQUEST')
  }
  if (choice === undefined) return rawError(client, 'NO_ROUTE')
  const upstream = choice.upstream
  const t0 = performance.now()
  let lines = `${req.method} ${path} HTTP/1.1\r\n`
  for (let i = 0; i < reqHead.headers.length; i += 2) lines += `${reqHead.headers[i]}: ${reqHead.headers[i + 1]}\r\n`
  lines += '\r\n'

  const fail = (code: ProxyErrorCode): void => {
    choice.stats.recordError(code, ERRORS[code].status, performance.now() - t0)
    rawError(client, code)
  }
  const tried: CTarget[] = []
  let retriesLeft = upstream.retries
  const attempt = (): void => {
    const target = pickTarget(upstream, tried)
    if (target === undefined) return fail(tried.length === 0 ? 'NO_HEALTHY_TARGET' : 'UPSTREAM_ERROR')
    const conn = connect({ host: target.host, port: target.port })
    let connected = false
    conn.once('connect', () => {
      connected = true
      if (client.destroyed) return conn.destroy()
      conn.write(lines)
      if (head.length > 0) conn.write(head)
      conn.pipe(client)
      client.pipe(conn)
      target.rt.websockets.add(client)
      choice.stats.record(101, performance.now() - t0)
      client.once('close', () => {
        target.rt.websockets.delete(client)
        conn.destroy()
      })
      conn.once('close', () => client.destroy())
    })
    conn.on('error', () => {
      if (connected) return client.destroy()
      resources.markFailed(target.rt)
      tried.push(target)
      if (retriesLeft-- > 0 && !client.destroyed) {
        upstream.counters.retries++
        return attempt()
      }
      fail('UPSTREAM_ERROR')
    })
  }
  attempt()
}
