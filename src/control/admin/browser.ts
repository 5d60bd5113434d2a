/**
 * What a web page the operator happens to visit cannot make the admin API do. Without a token
 * the API trusts whoever reaches its port, and a browser on the operator's machine reaches
 * loopback: a page can send a "simple" cross-site write (a bodyless POST needs no CORS
 * preflight), and a DNS-rebinding domain (evil.example resolving to 127.0.0.1) can read every
 * answer as same-origin. So, only while no token is configured:
 * - a request whose `Host` is not a loopback name or address (`localhost`, 127.0.0.0/8,
 *   `[::1]`, any port) nor the configured `admin.host` is refused: a rebinding page's requests
 *   carry its own name;
 * - a write (any method but GET/HEAD/OPTIONS) whose `Origin` is not the admin's own
 *   (`http://` + the Host it was asked with; `Origin: null` is foreign) is refused.
 * A request without `Host` or `Origin` is not a browser's (browsers always send Host, and
 * Origin on every cross-origin write), so curl and `switchyard ctl` are unaffected.
 * With a token configured neither check applies: a browser never attaches a bearer token by
 * itself, so a page's requests get 401 whatever their Host or Origin.
 * Probes (`/healthz`, `/readyz`, `/metrics`) answer whatever the Host: Kubernetes and
 * Prometheus address them by IP, and they change nothing.
 *
 * Every answer carries `X-Content-Type-Options: nosniff` (no JSON or text is ever run as a
 * script or style); the pages (`/`, `/docs`) also carry `PAGE_CSP`.
 */
import type { FastifyInstance } from 'fastify'
import { isLoopbackHost } from '../../config/load.js'
import { SwitchyardError } from '../../errors.js'

/** Scripts, styles and data only from the admin itself, and never inside another site's frame (clickjacking). */
export const PAGE_CSP = "default-src 'self'; frame-ancestors 'none'"

/** Read-only paths probes ask by IP. */
const PROBES = new Set(['/healthz', '/readyz', '/metrics'])
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])
/** Bind-all addresses name no host a client could be addressing. */
const WILDCARDS = new Set(['', '0.0.0.0', '::', '[::]'])

/** The host part of a Host header (`[::1]:9901` → `[::1]`), or undefined when it is malformed. */
export function hostnameOf(host: string): string | undefined {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+)(?::[0-9]*)?$/.exec(host)
  return m?.[1]?.toLowerCase()
}

const bare = (host: string) => host.toLowerCase().replace(/^\[(.*)\]$/, '$1')

/**
 * `tokens` is the live list (a reload may add or remove tokens); `adminHost` is the address
 * this server was configured to listen on.
 */
export function installBrowserChecks(app: FastifyInstance, tokens: readonly unknown[], adminHost: string | undefined): void {
  const own = adminHost === undefined || WILDCARDS.has(adminHost) ? undefined : bare(adminHost)
  const allowedHost = (hostname: string) => isLoopbackHost(hostname) || (own !== undefined && bare(hostname) === own)
  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-content-type-options', 'nosniff')
    if (tokens.length > 0) return
    const { host, origin } = req.headers
    if (host !== undefined && !(SAFE_METHODS.has(req.method) && PROBES.has(req.routeOptions.url ?? ''))) {
      const hostname = hostnameOf(host)
      if (hostname === undefined || !allowedHost(hostname)) {
        throw new SwitchyardError(
          'FORBIDDEN',
          `Host ${JSON.stringify(host)} is refused: without a token the admin API answers only requests addressed to localhost, 127.0.0.0/8, [::1] or admin.host, so a web page cannot reach it through a domain that resolves to this machine (DNS rebinding). To serve other names, set admin.token or admin.tokens`,
        )
      }
    }
    if (origin !== undefined && !SAFE_METHODS.has(req.method)) {
      const expected = host === undefined ? undefined : `http://${host.toLowerCase()}`
      if (origin.toLowerCase() !== expected) {
        throw new SwitchyardError(
          'FORBIDDEN',
          `a write from Origin ${JSON.stringify(origin)} is refused: without a token the admin API accepts writes only from its own pages (${expected ?? 'its own origin'}) or from clients that send no Origin (curl, switchyard ctl), so a web page cannot change the proxy. To allow other clients, set admin.token or admin.tokens`,
        )
      }
    }
  })
}
