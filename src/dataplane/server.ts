/**
 * The data plane: a node:http server that routes each request by the routing table in force
 * and forwards it. It does no I/O but proxying: the control plane builds tables and swaps them
 * in with `setTable()`; each request reads the table once at entry and finishes on it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import { Server as NetServer, type AddressInfo, type BlockList, type Socket } from 'node:net'
import { DEFAULTS } from '../config/defaults.js'
import { drainWebsockets } from './drain.js'
import { Exchange, sendError, type ExchangeContext } from './forward.js'
import { NO_TOKENS, TrustedPeers, type Forwarding } from './headers.js'
import { applyLimits, declaredOver, serverOptions, watchLimits } from './limits.js'
import { routeRequest } from './match.js'
import { mirrorFor } from './mirror.js'
import { refuseConnect } from './request-checks.js'
import { Resources } from './resources.js'
import { EMPTY_TABLE, liveCheck, type RoutingTable } from './table.js'
import type { PruneCandidates } from './resources.js'
import { afterPending, proxyUpgrade, servePlain } from './ws.js'

const netServerClose = NetServer.prototype.close

export { EMPTY_TABLE }

/** `listen.limits` with every default filled in (maxConnections: undefined = no bound). */
export interface EdgeLimits {
  headersTimeoutMs: number
  bodyIdleTimeoutMs: number
  keepAliveTimeoutMs: number
  maxConnections: number | undefined
  tunnelIdleTimeoutMs: number
}

export interface DataplaneOptions {
  /** per-client bounds; defaults from DEFAULTS.limits */
  limits?: Partial<EdgeLimits>
  /** peers whose forwarding headers are kept (listen.trustedProxies); null/undefined: none */
  trustedProxies?: BlockList | null
  /** PEM certificate and key: the proxy port serves HTTPS (HTTP/1.1, ALPN `http/1.1`) */
  tls?: { cert: string; key: string } | undefined
}

export class Dataplane {
  readonly resources = new Resources()
  /** the listening server; earlier ones (before a SIGHUP moved the listener) keep serving their connections */
  private http: Server
  private retired: Server[] = []
  private current: RoutingTable = EMPTY_TABLE
  /** How forwarding headers are set (see `requestHead`); replaced whole when a part of it changes. */
  private fwd: Forwarding
  private readonly ctx: ExchangeContext
  /** requests received and not yet answered in full (for graceful shutdown) */
  private open = 0
  private idleWaiters: (() => void)[] = []
  /** connections handed in by `accept()` and still open (a worker's: the primary accepted them) */
  private handed = 0
  private handedWaiters: (() => void)[] = []

  /** listen.limits, defaults filled in */
  readonly limits: EdgeLimits

  constructor(private readonly opts: DataplaneOptions = {}) {
    this.limits = { ...DEFAULTS.limits, maxConnections: undefined, ...opts.limits }
    // The exchanges read the limits through this object: a reload changes it in place.
    this.ctx = { res: this.resources, closing: false, requestClosed: () => this.onClose(), limits: this.limits }
    this.fwd = { proto: opts.tls === undefined ? 'http' : 'https', trusted: peersOf(opts.trustedProxies), adminTokens: NO_TOKENS }
    this.http = this.newServer()
  }

  private newServer(): Server {
    const options = serverOptions(this.limits, this.opts.tls !== undefined)
    const tls = this.opts.tls
    // An https.Server is a node:http server on TLS sockets: same events, same methods.
    const server =
      tls === undefined
        ? createServer(options, this.handle)
        : (createHttpsServer({ ...options, cert: tls.cert, key: tls.key, ALPNProtocols: ['http/1.1'] }, this.handle) as unknown as Server)
    // Every request asking for an upgrade comes here, its connection handed over by node:http
    // (no shouldUpgradeCallback: declined there, node:http drops what the same read holds after
    // the request, parses later reads, and has no way to close the connection after the answer).
    // Tunnelled when its route allows the protocol (after a 101 only); otherwise a plain request.
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      if (this.ctx.closing) return socket.destroy()
      afterPending(socket, () => {
        if (!proxyUpgrade(this.current, this.resources, req, socket, head, this.fwd, this.limits.tunnelIdleTimeoutMs)) servePlain(req, socket, head, this.handle)
      })
    })
    // Without a listener node:http closes a CONNECT's socket without a word; answer it instead.
    server.on('connect', (_req: IncomingMessage, socket: Socket) => {
      this.resources.rejected.connect++
      refuseConnect(socket)
    })
    watchLimits(server, this.limits, this.resources)
    // `Expect: 100-continue`: the client is told to send its body only once the request is
    // forwarded; one refused at once (413 by Content-Length, 404, 503...) never sends it.
    server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res)
      if (!res.writableEnded) res.writeContinue()
    })
    return server
  }

  /**
   * A reload's listen.limits: the headers and keep-alive bounds apply to open connections too,
   * maxConnections and the body idle bound to what comes next (see `applyLimits`).
   */
  setLimits(limits: Partial<EdgeLimits> | undefined): void {
    Object.assign(this.limits, { ...DEFAULTS.limits, maxConnections: undefined, ...limits })
    applyLimits([this.http, ...this.retired], this.limits)
  }

  get server(): Server {
    return this.http
  }

  get table(): RoutingTable {
    return this.current
  }

  /**
   * The admin tokens (static config, set at start and replaced on reload): a request on the
   * proxy port carrying `Authorization: Bearer <one of them>` is forwarded without it.
   */
  get adminTokens(): ReadonlySet<string> {
    return this.fwd.adminTokens
  }

  set adminTokens(tokens: ReadonlySet<string>) {
    this.fwd = { ...this.fwd, adminTokens: tokens }
  }

  /** Peers whose forwarding headers are kept (listen.trustedProxies, replaced on reload); null: none. */
  set trustedProxies(list: BlockList | null) {
    this.fwd = { ...this.fwd, trusted: peersOf(list) }
  }

  /**
   * Swaps the routing table in one reference write; in-flight requests keep the one they
   * started with. `released`: what an incremental update replaced (see `updateTable()`); without
   * it every resource is checked against the new table.
   */
  setTable(table: RoutingTable, released?: PruneCandidates): void {
    this.current = table
    this.resources.prune(liveCheck(table), released)
    drainWebsockets(table, this.resources)
  }

  get closing(): boolean {
    return this.ctx.closing
  }

  /** Requests being served now, for graceful shutdown and tests. */
  get openRequests(): number {
    return this.open
  }

  private readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    const t0 = performance.now()
    const table = this.current
    this.open++
    const { path, head, choice, upstream, reject } = routeRequest(table, req, false, this.fwd)
    if (choice === undefined) {
      res.once('close', this.onClose)
      if (reject !== null) {
        // Refused before routing: no route or upstream is charged with it.
        this.resources.rejected[reject]++
        return sendError(res, 'BAD_REQUEST', true)
      }
      this.resources.noRoute++
      return sendError(res, 'NO_ROUTE', this.ctx.closing)
    }
    // A body the route does not take, said by Content-Length: 413 before any upstream is
    // contacted, and the connection closes (its body is not read). One compare without a bound.
    if (choice.maxBodyBytes !== Infinity && head.hasBody && declaredOver(req, choice.maxBodyBytes)) {
      res.once('close', this.onClose)
      this.resources.limited.body_too_large++
      return sendError(res, 'PAYLOAD_TOO_LARGE', true)
    }
    // A route without a mirror pays this one test.
    const copy = choice.mirror === null ? null : mirrorFor(choice.mirror, table, this.resources, req, path, head.headers, head.hasBody)
    new Exchange(this.ctx, req, res, choice, upstream!, path, head.headers, head.hasBody, t0, copy).start()
    if (copy !== null) copy.requestStarted()
  }

  private readonly onClose = (): void => {
    this.open--
    if (this.open === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters
      this.idleWaiters = []
      for (const w of waiters) w()
    }
  }

  /** Whether the proxy port speaks TLS (fixed for the life of the process). */
  get tls(): boolean {
    return this.opts.tls !== undefined
  }

  /**
   * Swaps in a new certificate and key (SIGHUP): new connections get it; open ones keep the one
   * they were made with. Throws, changing nothing, when the pair is not usable.
   */
  setCertificate(pair: { cert: string; key: string }): void {
    if (this.opts.tls === undefined) throw new Error('the proxy port does not serve TLS')
    // setSecureContext() builds the context first: a bad pair throws before anything changes.
    ;(this.http as unknown as HttpsServer).setSecureContext({ cert: pair.cert, key: pair.key })
    this.opts.tls = pair
  }

  async listen(port: number, host: string): Promise<AddressInfo> {
    return listenOn(this.http, port, host)
  }

  /**
   * Serves a connection accepted elsewhere, instead of listening (a `--workers` worker: the
   * primary holds the port; `servesHanded(server)` first); false (leaving it untouched) once
   * shutting down.
   */
  accept(socket: Socket): boolean {
    if (this.ctx.closing) return false
    // maxConnections, counted here for handed-in connections (node:net counts a listener's): one
    // over it is closed at once, and is taken (the primary must not offer it to another worker).
    const max = this.limits.maxConnections
    if (max !== undefined && this.handed >= max) {
      this.resources.limited.max_connections++
      socket.destroy()
      return true
    }
    this.handed++
    socket.once('close', this.onHandedClose)
    this.http.emit('connection', socket)
    return true
  }

  private readonly onHandedClose = (): void => {
    if (--this.handed > 0) return
    const waiters = this.handedWaiters
    this.handedWaiters = []
    for (const w of waiters) w()
  }

  /**
   * Moves the listener (SIGHUP with a new `listen`): the new address listens before the old one
   * stops accepting, and connections already open on the old one go on being served until
   * they end. Throws (changing nothing) when the new address cannot be bound.
   */
  async relisten(port: number, host: string): Promise<AddressInfo> {
    const next = this.newServer()
    const addr = await listenOn(next, port, host)
    const old = this.http
    this.http = next
    this.retired.push(old)
    netServerClose.call(old, () => (this.retired = this.retired.filter((s) => s !== old)))
    return addr
  }

  /**
   * Graceful stop: the listening socket closes at once and every response from now on carries
   * `Connection: close`. `closeIdle` (SIGTERM) also closes idle keep-alive connections at once;
   * without it (a worker replaced on reload, while another worker takes the new connections)
   * idle connections are left to end by themselves (the client's next request gets its answer
   * with `Connection: close`, or the keep-alive timeout ends it), so no client ever sends a
   * request on a socket we just closed. Resolves true when every in-flight request (and, without
   * `closeIdle`, every connection) finished, false when `timeoutMs` cut some.
   */
  async shutdown(timeoutMs: number, opts: { closeIdle?: boolean } = {}): Promise<boolean> {
    const closeIdle = opts.closeIdle ?? true
    this.ctx.closing = true
    const deadline = new Promise<false>((resolve) => setTimeout(() => resolve(false), timeoutMs).unref())
    // node:http's close() also closes idle connections; net.Server's close() only stops listening
    // and calls back once the last connection ended.
    const servers = [this.http, ...this.retired]
    const closed = Promise.all([
      ...servers.map(
        (server) =>
          new Promise<true>((resolve) => {
            if (!server.listening) {
              if (closeIdle) server.closeIdleConnections()
              // a retired server: its close callback is already taken; its connections are counted in `open`
              return resolve(true)
            }
            if (closeIdle) server.close(() => resolve(true))
            else netServerClose.call(server, () => resolve(true))
          }),
      ),
      // Handed-in connections are no listener's: count them down ourselves.
      this.handed === 0 ? true : new Promise<true>((resolve) => this.handedWaiters.push(() => resolve(true))),
    ]).then(() => true as const)
    let finished: boolean
    if (closeIdle) {
      for (const server of servers) server.closeIdleConnections()
      const drained = this.open === 0 ? Promise.resolve(true as const) : new Promise<true>((resolve) => this.idleWaiters.push(() => resolve(true)))
      finished = await Promise.race([drained, deadline])
    } else {
      finished = await Promise.race([closed, deadline])
    }
    for (const rt of this.resources.targets.values()) for (const ws of rt.websockets) ws.destroy()
    for (const server of servers) server.closeAllConnections()
    await closed
    await this.resources.close()
    return finished
  }
}

function peersOf(list: BlockList | null | undefined): TrustedPeers | null {
  return list === null || list === undefined ? null : new TrustedPeers(list)
}

/**
 * node:http starts tracking its connections (what closeIdleConnections() and the headers timeout
 * work on) when the server emits 'listening'; a server that is handed its connections never
 * listens, so it says so once itself, before the first connection.
 */
export function servesHanded(server: Server): void {
  server.emit('listening')
}

function listenOn(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve(server.address() as AddressInfo)
    })
  })
}
