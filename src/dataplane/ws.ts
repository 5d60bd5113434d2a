/**
 * WebSocket (and any HTTP/1.1 Upgrade) proxying: the handshake is written to the chosen target
 * over a raw TCP connection and the two sockets are piped both ways, so frames pass untouched.
 * Sockets are tracked per target so a drain can close them after `drainTimeoutMs`.
 *
 * Like a plain request: the connect is bounded by the upstream's `connectTimeoutMs` (and
 * retried on another target when it fails), the upstream's answer by `headersTimeoutMs`; the
 * exchange is counted by the status the upstream really answered (101, or e.g. a 400 refusing
 * the upgrade), read from its status line before anything is relayed.
 */
import type { IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { ERRORS, errorBody, type ErrorCode } from '../errors.js'
import { pickTarget } from './balance.js'
import { routeRequest } from './match.js'
import { recordFailure, recordResponse } from './outlier.js'
import { tlsOptions, type Resources } from './resources.js'
import type { ProxyErrorCode } from './stats.js'
import type { CTarget, RoutingTable } from './table.js'
import { tlsReason } from './upstream-error.js'

function rawError(socket: Socket, code: ErrorCode): void {
  const body = errorBody(code)
  socket.end(
    `HTTP/1.1 ${ERRORS[code].status} ${code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  )
}

/** `HTTP/1.1 101 Switching Protocols` → 101; anything else → 0. */
export function statusOf(line: string): number {
  const m = /^HTTP\/1\.[01] ([1-5][0-9][0-9])(?: |$)/.exec(line)
  return m === null ? 0 : Number(m[1])
}

/** A status line longer than this is not one. */
const MAX_STATUS_LINE = 8 * 1024

const CONNECTING = 0
const AWAITING_STATUS = 1
const PIPING = 2
const DONE = 3

export function proxyUpgrade(
  table: RoutingTable,
  resources: Resources,
  req: IncomingMessage,
  client: Socket,
  head: Buffer,
  adminTokens?: ReadonlySet<string>,
): void {
  client.on('error', () => client.destroy())
  const { path, head: reqHead, choice, upstream: routedUpstream, reject } = routeRequest(table, req, true, adminTokens)
  if (reject !== null) {
    resources.rejected[reject]++
    return rawError(client, 'BAD_REQUEST')
  }
  if (choice === undefined) return rawError(client, 'NO_ROUTE')
  const upstream = routedUpstream!
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
  let lastError: ProxyErrorCode = 'UPSTREAM_ERROR'

  const attempt = (): void => {
    const target = pickTarget(upstream, tried)
    if (target === undefined) return fail(tried.length === 0 ? 'NO_HEALTHY_TARGET' : lastError)
    const rt = target.rt
    const tls = target.tls
    const conn = tls === null ? connect({ host: target.host, port: target.port }) : tlsConnect({ host: target.host, port: target.port, ...tlsOptions(tls) })
    // Over TLS the upgrade request waits for the handshake (and its certificate check).
    const ready = tls === null ? 'connect' : 'secureConnect'
    let tlsFailure: string | undefined
    let phase = CONNECTING
    let timedOut = false
    const expire = (): void => {
      timedOut = true
      conn.destroy()
    }
    let timer = setTimeout(expire, upstream.connectTimeoutMs)
    let answer: Buffer | null = null

    const onData = (chunk: Buffer): void => {
      answer = answer === null ? chunk : Buffer.concat([answer, chunk])
      const eol = answer.indexOf('\r\n')
      if (eol < 0 && answer.length <= MAX_STATUS_LINE) return
      const status = eol < 0 ? 0 : statusOf(answer.toString('latin1', 0, eol))
      // Not HTTP: answered like no answer at all (502), nothing relayed.
      if (status === 0) return void conn.destroy()
      clearTimeout(timer)
      phase = PIPING
      conn.off('data', onData)
      choice.stats.record(status, performance.now() - t0)
      recordResponse(upstream, rt, status)
      client.write(answer)
      conn.pipe(client)
    }

    conn.once(ready, () => {
      clearTimeout(timer)
      if (client.destroyed) {
        phase = DONE
        return void conn.destroy()
      }
      phase = AWAITING_STATUS
      timer = setTimeout(expire, upstream.headersTimeoutMs)
      conn.write(lines)
      if (head.length > 0) conn.write(head)
      client.pipe(conn)
      rt.websockets.add(client)
      resources.wsTargets.add(rt)
      client.once('close', () => {
        rt.websockets.delete(client)
        // Gone before the upstream answered: the client's doing, counted as a cut (class 0).
        if (phase === AWAITING_STATUS) choice.stats.record(0, performance.now() - t0)
        if (phase !== PIPING) phase = DONE
        conn.destroy()
      })
      conn.on('data', onData)
    })
    // 'close' follows every error and does the work.
    conn.on('error', (err) => {
      if (phase === CONNECTING) tlsFailure = tlsReason(err)
    })
    conn.once('close', () => {
      clearTimeout(timer)
      if (phase === PIPING) return void client.destroy()
      if (phase === DONE) return
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
      // Connected and sent, but no (valid) status line came: nothing was relayed yet.
      phase = DONE
      client.unpipe(conn)
      rt.websockets.delete(client)
      fail(timedOut ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_ERROR')
    })
  }
  attempt()
}
