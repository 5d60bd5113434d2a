/**
 * Active health checks: each target of an upstream with `healthCheck` is probed on its own
 * timer; `healthyThreshold` passes bring it in, `unhealthyThreshold` failures take it out. The
 * probe carries no credentials of the proxy's and uses its own short-lived connection
 * (node:http without an agent), so it never sits in the request pools.
 */
import { request } from 'node:http'
import { DEFAULTS, type HealthCheck, type State } from '../config/schema.js'
import type { Resources } from '../dataplane/resources.js'

interface Probe {
  timer: NodeJS.Timeout
  spec: string // JSON of the check + url, to notice changes
  passes: number
  failures: number
}

export class HealthChecker {
  private readonly probes = new Map<string, Probe>()
  private stopped = false

  constructor(private readonly resources: Resources) {}

  /** The upstream objects the probes were last matched with: an upstream whose object is the same did not change. */
  private seen = new Map<string, State['upstreams'][string]>()

  /**
   * Starts, keeps or stops probes so they match `state`. Called after every table swap; it
   * looks again only at upstreams whose object changed (states share unchanged ones), so a
   * change costs the targets it touched, not all of them.
   */
  sync(state: State): void {
    if (this.stopped) return
    const seen = new Map<string, State['upstreams'][string]>()
    for (const [upstream, u] of Object.entries(state.upstreams)) {
      seen.set(upstream, u)
      if (this.seen.get(upstream) !== u) this.syncUpstream(upstream, u)
    }
    for (const [upstream] of this.seen) if (!seen.has(upstream)) this.syncUpstream(upstream, undefined)
    this.seen = seen
  }

  private syncUpstream(upstream: string, u: State['upstreams'][string] | undefined): void {
    const wanted = new Set<string>()
    if (u?.healthCheck) {
      for (const t of u.targets) {
        const key = `${upstream}/${t.id}`
        const spec = JSON.stringify([t.url, u.healthCheck])
        wanted.add(key)
        const existing = this.probes.get(key)
        if (existing?.spec === spec) continue
        if (existing) clearInterval(existing.timer)
        this.startProbe(key, t.url, u.healthCheck, spec)
      }
    }
    const prefix = `${upstream}/`
    for (const [key, p] of this.probes) {
      if (key.startsWith(prefix) && !wanted.has(key)) {
        clearInterval(p.timer)
        this.probes.delete(key)
        const rt = this.resources.targets.get(key)
        if (rt) rt.activeCheck = false
      }
    }
  }

  private startProbe(key: string, url: string, hc: HealthCheck, spec: string): void {
    const intervalMs = hc.intervalMs ?? DEFAULTS.healthCheck.intervalMs
    const timeoutMs = hc.timeoutMs ?? DEFAULTS.healthCheck.timeoutMs
    const healthyAfter = hc.healthyThreshold ?? DEFAULTS.healthCheck.healthyThreshold
    const unhealthyAfter = hc.unhealthyThreshold ?? DEFAULTS.healthCheck.unhealthyThreshold
    const probeUrl = new URL(hc.path, url).toString()
    const probe: Probe = { timer: undefined as unknown as NodeJS.Timeout, spec, passes: 0, failures: 0 }
    let running = false
    const run = async (): Promise<void> => {
      if (running || this.stopped) return
      running = true
      const ok = await check(probeUrl, timeoutMs)
      running = false
      const rt = this.resources.targets.get(key)
      if (!rt || this.probes.get(key) !== probe) return
      rt.activeCheck = true
      if (ok) {
        probe.failures = 0
        probe.passes++
        // A target that has never passed (added at run time) comes in on its first pass.
        if (!rt.healthy && (probe.passes >= healthyAfter || !rt.everHealthy)) rt.healthy = true
      } else {
        probe.passes = 0
        probe.failures++
        if (rt.healthy && probe.failures >= unhealthyAfter) rt.healthy = false
      }
      if (rt.healthy) rt.everHealthy = true
    }
    probe.timer = setInterval(() => void run(), intervalMs)
    probe.timer.unref()
    this.probes.set(key, probe)
    void run()
  }

  stop(): void {
    this.stopped = true
    for (const p of this.probes.values()) clearInterval(p.timer)
    this.probes.clear()
  }
}

/** One GET with a fresh connection; 2xx and 3xx within `timeoutMs` pass. Never rejects. */
function check(url: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(url, { method: 'GET', agent: false, timeout: timeoutMs }, (res) => {
      res.resume()
      res.once('end', () => resolve(res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 400))
      res.once('error', () => resolve(false))
    })
    const timer = setTimeout(() => req.destroy(new Error('health check timed out')), timeoutMs)
    req.once('close', () => clearTimeout(timer))
    req.once('timeout', () => req.destroy(new Error('health check timed out')))
    req.once('error', () => resolve(false))
    req.end()
  })
}
