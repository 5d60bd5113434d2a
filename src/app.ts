/**
 * One switchyard instance: data plane + control plane + admin API, wired from a config.
 * `cli/start.ts` runs it as a process; tests and the demo run it in-process.
 */
import type { FastifyInstance } from 'fastify'
import { BlockList, isIPv6, type Socket } from 'node:net'
import { DEFAULTS, type ConfigFile, type State } from './config/schema.js'
import { readListenerTls } from './config/tls-files.js'
import { normalizeState } from './config/validate.js'
import type { AdminDeps, AdminToken } from './control/admin/deps.js'
import { createAdminServer } from './control/admin/server.js'
import { tokenLengthRefusal, warnShortTokens } from './control/admin/token-length.js'
import { ControlPlane } from './control/control-plane.js'
import { startAccessLog } from './control/access-log.js'
import { logDataplaneEvents } from './control/dataplane-log.js'
import { HealthChecker } from './control/health.js'
import { DnsProvider } from './control/providers/dns.js'
import { Dataplane, servesHanded } from './dataplane/server.js'
import { RolloutDriver } from './rollout/driver.js'
import { Notifier } from './rollout/notify.js'
import { silentLogger, type Logger } from './log.js'
import { Metrics } from './metrics/metrics.js'
import type { WorkerMetricsLink } from './supervisor/metrics-link.js'
import { MemoryStore } from './store/memory.js'
import type { Store } from './store/store.js'

export interface AppOptions {
  /** Use this store instead of the one the config names (tests share one memory backing). */
  store?: Store
  /** Overrides for tests: faster resync / heartbeat / registry TTL. */
  resyncMs?: number
  heartbeatMs?: number
  instanceTtlMs?: number
  /** How long an instance may stay behind the store before it is reported (default 5 s). */
  behindAlertMs?: number
  /** How long a start on an empty Redis store waits for a running fleet to re-seed it; default `store.seedWaitMs` (2 s). */
  seedWaitMs?: number
  /** Where control-side events are logged; default: nowhere (in-process instances in tests). */
  logger?: Logger
  /** How often this instance publishes its traffic figures (default 1000 ms). */
  telemetryMs?: number
  /**
   * A worker of `--workers`: its metrics are served to the primary through this link, and
   * `/metrics` answers the group's (supervisor/metrics-link.ts).
   */
  metricsLink?: WorkerMetricsLink
  /** How often the rollout driver looks at the rollouts (default 250 ms). */
  rolloutTickMs?: number
  /** TTL of the rollout driver's lease (default 5000 ms). */
  rolloutLeaseMs?: number
  /**
   * A worker of `--workers`: the primary holds the proxy and admin ports and hands connections
   * over with `App.accept()`; the app listens on nothing.
   */
  handedConnections?: boolean
}

export interface App {
  readonly dataplane: Dataplane
  readonly control: ControlPlane
  /** the rollout driver (drives only while this instance holds the `rollouts` lease) */
  readonly rollouts: RolloutDriver
  readonly admin: FastifyInstance
  readonly log: Logger
  /** where the proxy listens (with handed connections: the configured address) */
  readonly proxyUrl: string
  readonly adminUrl: string
  /**
   * Serves a connection the primary accepted on `port` (handed connections only); false, leaving
   * the socket untouched, once this instance stopped accepting.
   */
  accept(port: 'proxy' | 'admin', socket: Socket): boolean
  /**
   * Applies a new config's static parts in place (SIGHUP without workers): `listen` and
   * admin addresses move (the new address listens before the old one stops accepting; open
   * connections are served to their end), admin tokens and `shutdownTimeoutMs` change. A new
   * store needs a restart and is refused. Upstreams, routes and flags live in the store, so
   * the file's copies are not re-applied. Resolves with what changed.
   */
  reload(next: ConfigFile): Promise<string[]>
  /**
   * Graceful stop (SIGTERM); resolves true when no in-flight request was cut. First
   * `/readyz` answers 503 SHUTTING_DOWN while the proxy goes on accepting and serving for
   * `shutdownDelayMs` (so a load balancer stops sending before the port closes), then it stops
   * accepting and drains for up to `timeoutMs` (default `shutdownTimeoutMs`).
   * `closeIdle: false` leaves idle keep-alive connections to end by themselves (worker reload).
   * `stoppedAccepting` is called once new connections are refused (a worker tells its primary).
   * `keepReady`: `/readyz` goes on answering 200 (a worker retiring while the others serve: the
   * instance as a whole stays ready).
   */
  close(timeoutMs?: number, opts?: { closeIdle?: boolean; delayMs?: number; keepReady?: boolean; stoppedAccepting?: () => void }): Promise<boolean>
}

/** The config file's state as revision 1: what an empty store is seeded with. */
export function seedState(config: ConfigFile): State {
  return { revision: 1, ...normalizeState(config), rollouts: {} }
}

/** The store the config names. ioredis is loaded only when Redis is used (it costs ~20 MB of RSS). */
export async function storeFor(config: ConfigFile): Promise<Store> {
  const s = config.store ?? { type: 'memory' }
  if (s.type === 'memory') return new MemoryStore()
  const { RedisStore } = await import('./store/redis.js')
  return new RedisStore({ url: s.url, prefix: s.prefix ?? DEFAULTS.redisPrefix, options: s.options })
}

/** How an address is shown and reached (a wildcard host is reached on loopback). */
export function urlOf(host: string, port: number, scheme = 'http'): string {
  const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host
  return `${scheme}://${h}:${port}`
}

/** Listens the admin server; resolves with its URL (port 0 → the port the OS chose). */
async function listenAdmin(admin: FastifyInstance, host: string, port: number): Promise<string> {
  await admin.listen({ port, host })
  const addr = admin.server.address()
  return urlOf(host, typeof addr === 'object' && addr ? addr.port : port)
}

/** `admin.token` (actor `token`) and `admin.tokens` entries, each with its role (default admin). */
export function adminTokens(config: ConfigFile): AdminToken[] {
  const out: AdminToken[] = []
  if (config.admin?.token) out.push({ name: 'token', token: config.admin.token, role: 'admin' })
  for (const [name, entry] of Object.entries(config.admin?.tokens ?? {})) {
    out.push(typeof entry === 'string' ? { name, token: entry, role: 'admin' } : { name, token: entry.token, role: entry.role ?? 'admin' })
  }
  return out
}

/** listen.trustedProxies as a BlockList (the CIDRs were checked by validation); none: null. */
function trustedProxies(cidrs: readonly string[] | undefined): BlockList | null {
  if (cidrs === undefined || cidrs.length === 0) return null
  const list = new BlockList()
  for (const cidr of cidrs) {
    const [addr, bits] = cidr.split('/') as [string, string | undefined]
    const family = isIPv6(addr) ? 'ipv6' : 'ipv4'
    if (bits === undefined) list.addAddress(addr, family)
    else list.addSubnet(addr, Number(bits), family)
  }
  return list
}

/** Logs once per upstream (per process) that it accepts any certificate: that is easy to forget. */
function warnInsecure(log: Logger): (state: State) => void {
  const warned = new Set<string>()
  return (state) => {
    for (const [name, u] of Object.entries(state.upstreams)) {
      if (u.tls?.insecureSkipVerify !== true || warned.has(name)) continue
      warned.add(name)
      log.warn({ upstream: name }, 'tls.insecureSkipVerify is on: this upstream\'s certificates are not checked, anyone on the path can read and change its traffic')
    }
  }
}

export async function startSwitchyard(config: ConfigFile, opts: AppOptions = {}): Promise<App> {
  const log = opts.logger ?? silentLogger
  const shortTokens = tokenLengthRefusal(config)
  if (shortTokens !== undefined) throw new Error(shortTokens)
  warnShortTokens(config, log)
  // The config loader checked the files; read again here, they may have changed since.
  const dataplane = new Dataplane({
    tls: config.listen?.tls === undefined ? undefined : readListenerTls(config.listen.tls),
    limits: config.listen?.limits,
    trustedProxies: trustedProxies(config.listen?.trustedProxies),
  })
  const stopEventLog = logDataplaneEvents(dataplane.resources, log)
  const accessLogOpts = { query: config.accessLog?.query === true }
  const stopAccessLog = startAccessLog(dataplane.resources, log, accessLogOpts)
  dataplane.resources.accessSample = config.accessLog?.sample ?? 0
  const health = new HealthChecker(dataplane.resources)
  const store = opts.store ?? (await storeFor(config))
  const control = new ControlPlane({
    store,
    dataplane,
    seed: seedState(config),
    log,
    resyncMs: opts.resyncMs,
    heartbeatMs: opts.heartbeatMs,
    instanceTtlMs: opts.instanceTtlMs,
    behindAlertMs: opts.behindAlertMs,
    telemetryMs: opts.telemetryMs,
    // Only a shared store can be re-seeded by a fleet; one the primary holds in memory cannot.
    seedWaitMs: opts.seedWaitMs ?? (config.store?.type === 'redis' ? config.store.seedWaitMs : 0),
  })
  // DNS discovery feeds the follower's compile; it follows the applied upstreams' `discovery`.
  const dns = new DnsProvider({
    log,
    inflight: (upstream, id) => dataplane.resources.targets.get(`${upstream}/${id}`)?.inflight ?? 0,
    onChange: () => control.follower.refresh(),
  })
  control.follower.use(dns)
  control.follower.onApplied((state) => dns.follow(state))
  control.follower.onApplied((state) => health.sync(state))
  control.follower.onApplied(warnInsecure(log))
  const notifier = new Notifier({ log })
  const rollouts = new RolloutDriver({ control, telemetry: control.telemetry, notifier, log, leaseMs: opts.rolloutLeaseMs ?? config.rolloutLeaseMs, tickMs: opts.rolloutTickMs })
  const metrics = new Metrics({ control, dataplane, discovery: dns, notifier })
  const link = opts.metricsLink
  link?.serve(metrics)
  const exposition = link === undefined ? metrics : { render: () => link.scrape() }
  const deps: AdminDeps = { control, dataplane, tokens: adminTokens(config), discovery: dns, notifier, metrics: exposition, shuttingDown: false }
  // The proxy port strips these from Authorization, so they never reach an upstream.
  dataplane.adminTokens = new Set(deps.tokens.map((t) => t.token))
  let admin = await createAdminServer(deps, { host: config.admin?.host ?? DEFAULTS.admin.host })
  let current = config
  const cleanup = async () => {
    stopEventLog()
    stopAccessLog()
    await rollouts.stop()
    notifier.close()
    dns.close()
    health.stop()
    await control.close().catch(() => {})
    await store.close().catch(() => {})
    await admin.close().catch(() => {})
  }
  try {
    await control.start()
    rollouts.start()
    // Like a cluster warming in Envoy: discovered upstreams have their first answer (or failure) before serving.
    await dns.settled()
    const listen = { ...DEFAULTS.listen, ...config.listen }
    const adminListen = { ...DEFAULTS.admin, ...config.admin }
    const proxyScheme = dataplane.tls ? 'https' : 'http'
    let proxyUrl: string
    let adminUrl: string
    if (opts.handedConnections === true) {
      servesHanded(dataplane.server)
      await admin.ready()
      servesHanded(admin.server)
      proxyUrl = urlOf(listen.host, listen.port, proxyScheme)
      adminUrl = urlOf(adminListen.host, adminListen.port)
    } else {
      const proxyAddr = await dataplane.listen(listen.port, listen.host)
      adminUrl = await listenAdmin(admin, adminListen.host, adminListen.port)
      proxyUrl = urlOf(listen.host, proxyAddr.port, proxyScheme)
    }
    return {
      dataplane,
      control,
      rollouts,
      log,
      get admin() {
        return admin
      },
      get proxyUrl() {
        return proxyUrl
      },
      get adminUrl() {
        return adminUrl
      },
      accept(port, socket) {
        if (port === 'proxy') return dataplane.accept(socket)
        // The admin port closes with the proxy port, as a listening instance's does.
        if (dataplane.closing) return false
        admin.server.emit('connection', socket)
        return true
      },
      async reload(next) {
        const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)
        if (!same(next.store ?? { type: 'memory' }, current.store ?? { type: 'memory' })) {
          throw new Error('store: changing the store needs a restart; nothing changed')
        }
        const shortTokens = tokenLengthRefusal(next)
        if (shortTokens !== undefined) throw new Error(`${shortTokens}; nothing changed`)
        const changes: string[] = []
        const [l0, l1] = [{ ...DEFAULTS.listen, ...current.listen }, { ...DEFAULTS.listen, ...next.listen }]
        if ((l0.tls === undefined) !== (l1.tls === undefined)) {
          throw new Error('listen.tls: turning TLS on or off needs a restart; nothing changed')
        }
        // Before any other change: a certificate that cannot be used leaves everything as it was.
        if (l1.tls !== undefined) {
          try {
            dataplane.setCertificate(readListenerTls(l1.tls))
          } catch (err) {
            throw new Error(`listen.tls: ${(err as Error).message}; the old certificate keeps serving, nothing changed`, { cause: err })
          }
          changes.push('listen.tls certificate re-read (new connections get it)')
        }
        if (l0.host !== l1.host || l0.port !== l1.port) {
          let addr
          try {
            addr = await dataplane.relisten(l1.port, l1.host)
          } catch (err) {
            throw new Error(`listen: cannot listen on ${l1.host}:${l1.port} (${(err as Error).message}); nothing changed`, { cause: err })
          }
          proxyUrl = urlOf(l1.host, addr.port, proxyScheme)
          changes.push(`proxy now listens on ${proxyUrl}`)
        }
        if (!same(l0.limits ?? {}, l1.limits ?? {})) {
          dataplane.setLimits(l1.limits)
          changes.push('listen.limits (headers and keep-alive bounds apply to open connections too, the others to new connections and requests)')
        }
        const tokens = adminTokens(next)
        if (!same(tokens, deps.tokens)) {
          deps.tokens.splice(0, deps.tokens.length, ...tokens)
          dataplane.adminTokens = new Set(tokens.map((t) => t.token))
          changes.push('admin tokens')
          warnShortTokens(next, log)
        }
        const [a0, a1] = [{ ...DEFAULTS.admin, ...current.admin }, { ...DEFAULTS.admin, ...next.admin }]
        if (a0.host !== a1.host || a0.port !== a1.port) {
          const fresh = await createAdminServer(deps, { host: a1.host })
          let freshUrl: string
          try {
            freshUrl = await listenAdmin(fresh, a1.host, a1.port)
          } catch (err) {
            await fresh.close()
            throw new Error(`admin: cannot listen on ${a1.host}:${a1.port} (${(err as Error).message}); ${changes.length > 0 ? `applied so far: ${changes.join(', ')}` : 'nothing changed'}`, { cause: err })
          }
          const old = admin
          admin = fresh
          adminUrl = freshUrl
          void old.close().catch(() => {})
          changes.push(`admin now listens on ${adminUrl}`)
        }
        if ((next.accessLog?.sample ?? 0) !== (current.accessLog?.sample ?? 0)) {
          dataplane.resources.accessSample = next.accessLog?.sample ?? 0
          changes.push(`accessLog.sample ${dataplane.resources.accessSample}`)
        }
        if ((next.accessLog?.query === true) !== accessLogOpts.query) {
          accessLogOpts.query = next.accessLog?.query === true
          changes.push(`accessLog.query ${accessLogOpts.query}`)
        }
        if (!same(l0.trustedProxies ?? [], l1.trustedProxies ?? [])) {
          dataplane.trustedProxies = trustedProxies(l1.trustedProxies)
          changes.push('listen.trustedProxies')
        }
        if (next.shutdownTimeoutMs !== current.shutdownTimeoutMs) changes.push(`shutdownTimeoutMs ${next.shutdownTimeoutMs ?? DEFAULTS.shutdownTimeoutMs}`)
        if (next.shutdownDelayMs !== current.shutdownDelayMs) changes.push(`shutdownDelayMs ${next.shutdownDelayMs ?? DEFAULTS.shutdownDelayMs}`)
        current = next
        return changes
      },
      async close(timeoutMs = current.shutdownTimeoutMs ?? DEFAULTS.shutdownTimeoutMs, opts = {}) {
        deps.shuttingDown = opts.keepReady !== true
        const delayMs = opts.delayMs ?? current.shutdownDelayMs ?? DEFAULTS.shutdownDelayMs
        if (delayMs > 0) {
          log.info({ delayMs }, 'shutting down: /readyz answers 503; still accepting and serving for shutdownDelayMs')
          await new Promise((resolve) => setTimeout(resolve, delayMs))
        }
        log.info({ inflight: dataplane.openRequests, timeoutMs }, 'shutting down: stopped accepting; finishing in-flight requests')
        // shutdown() refuses new connections before its first await: the primary can be told now.
        const draining = dataplane.shutdown(timeoutMs, opts)
        opts.stoppedAccepting?.()
        const finished = await draining
        await cleanup()
        return finished
      },
    }
  } catch (err) {
    await dataplane.shutdown(0).catch(() => {})
    await cleanup()
    throw err
  }
}
