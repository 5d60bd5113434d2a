/**
 * DNS target discovery (HAProxy's server-template with resolvers, Envoy's STRICT_DNS): each
 * upstream with `discovery.dns` is looked up every `refreshMs` on this instance, and the
 * addresses found are its discovered targets (`source: "dns"`), handed to the compiler as
 * provider input, never written to the store (no revision, no audit event).
 *
 * - A new address is added as an active target; with a health check it gets traffic only after
 *   its first passing check, like a target added through the admin API.
 * - A vanished address drains: it stays in the table as `draining` (no new requests; WebSockets
 *   close after `drainTimeoutMs`) until this instance has no request in flight to it, then it
 *   is dropped.
 * - A failed lookup (or one that found no address) keeps the last good set; the first failure
 *   of a streak is logged as a warning, and the recovery once.
 * - The watched upstreams follow the applied state: a changed `discovery` restarts the lookups
 *   (keeping the set until the new lookup answers); a removed one drains its targets.
 */
import { Resolver } from 'node:dns/promises'
import { DEFAULTS, type DnsDiscovery, type State } from '../../config/schema.js'
import { parseServer } from '../../config/validate-discovery.js'
import type { Logger } from '../../log.js'
import { lookup, LookupError, type Found } from './dns-lookup.js'
import type { ProvidedTarget, TargetProvider } from './provider.js'

export interface DnsProviderOptions {
  log: Logger
  /** Requests in flight to a target on this instance: a vanished target is dropped at 0. */
  inflight(upstream: string, id: string): number
  /** Called (after the current task, coalesced) when the targets changed: the follower recompiles. */
  onChange(): void
  /** How often draining targets are checked for their last request. Default 100 ms. */
  drainPollMs?: number
}

/** Per-upstream lookup counters, for metrics. */
export interface DnsLookupStats {
  upstream: string
  lookups: number
  failures: number
}

const DRAIN_POLL_MS = 100

interface Watch {
  readonly upstream: string
  /** undefined once discovery was removed from the upstream: its targets drain out */
  spec: DnsDiscovery | undefined
  resolver: Resolver | undefined
  timer: NodeJS.Timeout | undefined
  /** bumped on every reconfiguration, so a lookup of an older one is ignored */
  generation: number
  readonly targets: Map<string, ProvidedTarget>
  list: readonly ProvidedTarget[]
  /** since when lookups fail (epoch ms), null while they succeed */
  failingSince: number | null
  failedLookups: number
  lookups: number
  failures: number
  /** settles when the first lookup of the current configuration settled */
  first: Promise<void>
}

export class DnsProvider implements TargetProvider {
  private readonly watches = new Map<string, Watch>()
  private drainTimer: NodeJS.Timeout | undefined
  private notify: NodeJS.Immediate | undefined
  private closed = false

  constructor(private readonly opts: DnsProviderOptions) {}

  targets(upstream: string): readonly ProvidedTarget[] {
    return this.watches.get(upstream)?.list ?? []
  }

  /** Starts, restarts or stops lookups so they match the upstreams of `state`. */
  follow(state: State): void {
    if (this.closed) return
    for (const [name, upstream] of Object.entries(state.upstreams)) {
      const spec = upstream.discovery?.dns
      const watch = this.watches.get(name)
      if (spec !== undefined) {
        if (watch === undefined) this.start(this.newWatch(name), spec)
        else if (JSON.stringify(watch.spec) !== JSON.stringify(spec)) this.start(watch, spec)
      } else if (watch?.spec !== undefined) {
        this.stop(watch)
        watch.spec = undefined
        this.opts.log.info({ upstream: name }, 'DNS discovery removed: its targets drain')
        this.mark(watch, [])
        if (watch.targets.size === 0) this.watches.delete(name)
      }
    }
    for (const [name, watch] of this.watches) {
      if (Object.hasOwn(state.upstreams, name)) continue
      this.stop(watch)
      this.watches.delete(name)
    }
  }

  /** Settles when the first lookup of every watched upstream settled (answered, failed or timed out). */
  async settled(): Promise<void> {
    await Promise.all([...this.watches.values()].map((w) => w.first))
    // ...and the change they made reached the follower (the notice runs on setImmediate, in order).
    await new Promise((resolve) => setImmediate(resolve))
  }

  stats(): DnsLookupStats[] {
    return [...this.watches.values()].map((w) => ({ upstream: w.upstream, lookups: w.lookups, failures: w.failures }))
  }

  close(): void {
    this.closed = true
    for (const w of this.watches.values()) this.stop(w)
    if (this.drainTimer) clearInterval(this.drainTimer)
    if (this.notify) clearImmediate(this.notify)
  }

  private newWatch(upstream: string): Watch {
    const watch: Watch = {
      upstream,
      spec: undefined,
      resolver: undefined,
      timer: undefined,
      generation: 0,
      targets: new Map(),
      list: [],
      failingSince: null,
      failedLookups: 0,
      lookups: 0,
      failures: 0,
      first: Promise.resolve(),
    }
    this.watches.set(upstream, watch)
    return watch
  }

  /** (Re)configures `watch` and looks up at once; the targets it holds stay until the answer. */
  private start(watch: Watch, spec: DnsDiscovery): void {
    this.stop(watch)
    watch.spec = spec
    const timeoutMs = spec.timeoutMs ?? DEFAULTS.discovery.timeoutMs
    // Two tries per query within the lookup's time (c-ares doubles the timeout on the retry).
    const resolver = new Resolver({ timeout: Math.max(1, Math.floor(timeoutMs / 3)), tries: 2 })
    // Validated already; written out in the one form node accepts for both families ([ip6]:port).
    if (spec.servers !== undefined) resolver.setServers(spec.servers.map(serverAddress))
    watch.resolver = resolver
    watch.first = this.run(watch, watch.generation)
  }

  private stop(watch: Watch): void {
    watch.generation++
    if (watch.timer) clearTimeout(watch.timer)
    watch.timer = undefined
    watch.resolver?.cancel()
    watch.resolver = undefined
  }

  /** One lookup, then the next one `refreshMs` later (so lookups never overlap). Never rejects. */
  private async run(watch: Watch, generation: number): Promise<void> {
    const spec = watch.spec
    const resolver = watch.resolver
    if (spec === undefined || resolver === undefined) return
    const timeoutMs = spec.timeoutMs ?? DEFAULTS.discovery.timeoutMs
    let found: Found[] | undefined
    let failure: LookupError | undefined
    let deadline: NodeJS.Timeout | undefined
    try {
      found = await Promise.race([
        lookup(resolver, spec),
        new Promise<never>((_, reject) => {
          deadline = setTimeout(() => {
            resolver.cancel()
            reject(new LookupError('ETIMEOUT', `${spec.type ?? DEFAULTS.discovery.type} ${spec.name}: no answer within ${timeoutMs} ms`))
          }, timeoutMs)
        }),
      ])
    } catch (err) {
      failure = err instanceof LookupError ? err : new LookupError('EUNKNOWN', (err as Error).message)
    } finally {
      clearTimeout(deadline)
    }
    if (generation !== watch.generation || this.closed) return
    watch.lookups++
    if (found !== undefined) {
      this.recovered(watch, spec)
      this.mark(watch, found)
    } else if (failure !== undefined) {
      this.failed(watch, spec, failure)
    }
    watch.timer = setTimeout(() => void this.run(watch, generation), spec.refreshMs ?? DEFAULTS.discovery.refreshMs)
    watch.timer.unref()
  }

  private failed(watch: Watch, spec: DnsDiscovery, err: LookupError): void {
    watch.failures++
    watch.failedLookups++
    if (watch.failingSince !== null) return
    watch.failingSince = Date.now()
    this.opts.log.warn(
      { upstream: watch.upstream, name: spec.name, type: spec.type ?? DEFAULTS.discovery.type, code: err.code, error: err.message, targets: watch.list.length },
      'DNS discovery lookup failed: keeping the last good set of targets',
    )
  }

  private recovered(watch: Watch, spec: DnsDiscovery): void {
    if (watch.failingSince === null) return
    this.opts.log.info(
      { upstream: watch.upstream, name: spec.name, failedLookups: watch.failedLookups, failedForMs: Date.now() - watch.failingSince },
      'DNS discovery lookup recovered',
    )
    watch.failingSince = null
    watch.failedLookups = 0
  }

  /** Makes `found` the active set: new addresses become active targets, vanished ones drain. */
  private mark(watch: Watch, found: readonly Found[]): void {
    const added: string[] = []
    const draining: string[] = []
    const seen = new Set<string>()
    for (const f of found) {
      seen.add(f.id)
      const current = watch.targets.get(f.id)
      if (current?.state === 'active' && current.url === f.url) continue
      watch.targets.set(f.id, { id: f.id, url: f.url, state: 'active', source: 'dns' })
      added.push(f.id)
    }
    for (const [id, t] of watch.targets) {
      if (seen.has(id) || t.state === 'draining') continue
      watch.targets.set(id, { ...t, state: 'draining' })
      draining.push(id)
    }
    if (added.length === 0 && draining.length === 0) return
    this.opts.log.info({ upstream: watch.upstream, added, draining }, 'DNS discovery changed the targets')
    this.changed(watch)
    if (draining.length > 0 && this.drainTimer === undefined) {
      this.drainTimer = setInterval(() => this.sweep(), this.opts.drainPollMs ?? DRAIN_POLL_MS)
      this.drainTimer.unref()
    }
  }

  /** Drops draining targets with no request in flight here; stops polling when none is left. */
  private sweep(): void {
    let draining = 0
    for (const watch of this.watches.values()) {
      const dropped: string[] = []
      for (const [id, t] of watch.targets) {
        if (t.state !== 'draining') continue
        if (this.opts.inflight(watch.upstream, id) === 0) {
          watch.targets.delete(id)
          dropped.push(id)
        } else draining++
      }
      if (dropped.length === 0) continue
      this.opts.log.info({ upstream: watch.upstream, dropped }, 'DNS discovery dropped drained targets')
      this.changed(watch)
      if (watch.spec === undefined && watch.targets.size === 0) this.watches.delete(watch.upstream)
    }
    if (draining === 0 && this.drainTimer !== undefined) {
      clearInterval(this.drainTimer)
      this.drainTimer = undefined
    }
  }

  private changed(watch: Watch): void {
    // By id, so the same answer always compiles the same way whatever order the addresses came in.
    watch.list = Object.freeze([...watch.targets.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)))
    // Deferred: follow() runs inside the follower's listeners, which must not recompile re-entrantly.
    this.notify ??= setImmediate(() => {
      this.notify = undefined
      if (!this.closed) this.opts.onChange()
    })
  }
}

function serverAddress(server: string): string {
  const { host, port } = parseServer(server) ?? { host: server, port: 53 }
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}
