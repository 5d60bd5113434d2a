/**
 * Active health checks: each target of an upstream with `healthCheck` is probed on its own
 * timer; `healthyThreshold` passes bring it in, `unhealthyThreshold` failures take it out. The
 * probe carries no credentials of the proxy's and uses its own short-lived connection
 * (node:http or node:https without an agent), so it never sits in the request pools. An https://
 * target is checked with its upstream's `tls` options, so a certificate the proxy would refuse
 * fails the check too, with the reason on the target (`tls: ...`).
 */
import { request } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { DEFAULTS, healthTimeoutMs, type HealthCheck, type State, type UpstreamTls } from '../config/schema.js'
import { pemPaths, readCaFiles } from '../config/tls-files.js'
import { tlsReason } from '../dataplane/upstream-error.js'
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
        const spec = JSON.stringify([t.url, u.healthCheck, u.tls])
        wanted.add(key)
        const existing = this.probes.get(key)
        if (existing?.spec === spec) continue
        if (existing) clearInterval(existing.timer)
        this.startProbe(key, t.url, u.healthCheck, spec, u.tls)
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

  private startProbe(key: string, url: string, hc: HealthCheck, spec: string, tls: UpstreamTls | undefined): void {
    const intervalMs = hc.intervalMs ?? DEFAULTS.healthCheck.intervalMs
    const timeoutMs = hc.timeoutMs ?? healthTimeoutMs(intervalMs)
    const healthyAfter = hc.healthyThreshold ?? DEFAULTS.healthCheck.healthyThreshold
    const unhealthyAfter = hc.unhealthyThreshold ?? DEFAULTS.healthCheck.unhealthyThreshold
    const probeUrl = new URL(hc.path, url).toString()
    // Read once per probe (a change to the upstream starts a new one), asynchronously; an unusable file fails every check with its reason.
    const ca = caOf(tls)
    const probe: Probe = { timer: undefined as unknown as NodeJS.Timeout, spec, passes: 0, failures: 0 }
    let running = false
    const run = async (): Promise<void> => {
      if (running || this.stopped) return
      running = true
      const { ok, tlsFailure } = await check(probeUrl, timeoutMs, tls, await ca)
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
        if (!rt.healthy && tlsFailure !== undefined) rt.downReason = tlsFailure
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

/** Never rejects: an unusable file is the Error that every check of the probe then fails with. */
async function caOf(tls: UpstreamTls | undefined): Promise<string[] | Error | undefined> {
  if (tls?.ca === undefined) return undefined
  try {
    return await readCaFiles(pemPaths(tls.ca))
  } catch (err) {
    return err as Error
  }
}

interface CheckResult {
  ok: boolean
  /** `tls: ...` when the handshake failed */
  tlsFailure?: string | undefined
}

/** One GET with a fresh connection; 2xx and 3xx within `timeoutMs` pass. Never rejects. */
function check(url: string, timeoutMs: number, tls: UpstreamTls | undefined, ca: string[] | Error | undefined): Promise<CheckResult> {
  return new Promise((resolve) => {
    const onResponse = (res: import('node:http').IncomingMessage): void => {
      res.resume()
      res.once('end', () => resolve({ ok: res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 400 }))
      res.once('error', () => resolve({ ok: false }))
    }
    const options = { method: 'GET', agent: false as const, timeout: timeoutMs }
    let req
    if (url.startsWith('https:')) {
      if (ca instanceof Error) return resolve({ ok: false, tlsFailure: `tls: ${ca.message}` })
      req = httpsRequest(url, { ...options, ca, servername: tls?.servername, rejectUnauthorized: tls?.insecureSkipVerify !== true }, onResponse)
    } else req = request(url, options, onResponse)
    const timer = setTimeout(() => req.destroy(new Error('health check timed out')), timeoutMs)
    req.once('close', () => clearTimeout(timer))
    req.once('timeout', () => req.destroy(new Error('health check timed out')))
    req.once('error', (err) => resolve({ ok: false, tlsFailure: tlsReason(err) }))
    req.end()
  })
}
