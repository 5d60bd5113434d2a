/**
 * One switchyard instance: data plane + control plane + admin API, wired from a config.
 * `cli/start.ts` runs it as a process; tests and the demo run it in-process.
 */
import type { FastifyInstance } from 'fastify'
import { DEFAULTS, type ConfigFile, type State } from './config/schema.js'
import { normalizeState } from './config/validate.js'
import { createAdminServer } from './control/admin/server.js'
import { ControlPlane } from './control/control-plane.js'
import { HealthChecker } from './control/health.js'
import { Dataplane } from './dataplane/server.js'
import { MemoryStore } from './store/memory.js'
import type { Store } from './store/store.js'

export interface AppOptions {
  /** Use this store instead of the one the config names (tests share one memory backing). */
  store?: Store
  /** Overrides for tests: faster resync / heartbeat / registry TTL. */
  resyncMs?: number
  heartbeatMs?: number
  instanceTtlMs?: number
}

export interface App {
  readonly dataplane: Dataplane
  readonly control: ControlPlane
  readonly admin: FastifyInstance
  readonly proxyUrl: string
  readonly adminUrl: string
  /**
   * Graceful stop (SPEC §2 SIGTERM); resolves true when no in-flight request was cut.
   * `closeIdle: false` leaves idle keep-alive connections to end by themselves (worker reload).
   */
  close(timeoutMs?: number, opts?: { closeIdle?: boolean }): Promise<boolean>
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

function urlOf(host: string, port: number): string {
  const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host
  return `http://${h}:${port}`
}

export function adminTokens(config: ConfigFile): { name: string; token: string }[] {
  const out: { name: string; token: string }[] = []
  if (config.admin?.token) out.push({ name: 'token', token: config.admin.token })
  for (const [name, token] of Object.entries(config.admin?.tokens ?? {})) out.push({ name, token })
  return out
}

export async function startSwitchyard(config: ConfigFile, opts: AppOptions = {}): Promise<App> {
  const dataplane = new Dataplane()
  const health = new HealthChecker(dataplane.resources)
  const store = opts.store ?? (await storeFor(config))
  const control = new ControlPlane({
    store,
    dataplane,
    seed: seedState(config),
    resyncMs: opts.resyncMs,
    heartbeatMs: opts.heartbeatMs,
    instanceTtlMs: opts.instanceTtlMs,
    onApplied: (state) => health.sync(state),
  })
  const admin = await createAdminServer({ control, dataplane, tokens: adminTokens(config) })
  const cleanup = async () => {
    health.stop()
    await control.close().catch(() => {})
    await store.close().catch(() => {})
    await admin.close().catch(() => {})
  }
  try {
    await control.start()
    const listen = { ...DEFAULTS.listen, ...config.listen }
    const adminListen = { ...DEFAULTS.admin, ...config.admin }
    const proxyAddr = await dataplane.listen(listen.port, listen.host)
    await admin.listen({ port: adminListen.port, host: adminListen.host })
    const adminAddr = admin.server.address()
    const adminPort = typeof adminAddr === 'object' && adminAddr ? adminAddr.port : adminListen.port
    return {
      dataplane,
      control,
      admin,
      proxyUrl: urlOf(listen.host, proxyAddr.port),
      adminUrl: urlOf(adminListen.host, adminPort),
      async close(timeoutMs = config.shutdownTimeoutMs ?? DEFAULTS.shutdownTimeoutMs, opts = {}) {
        const finished = await dataplane.shutdown(timeoutMs, opts)
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
