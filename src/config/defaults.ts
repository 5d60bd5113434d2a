/**
 * Defaults, with units; see README "Configuration". Kept apart from the TypeBox schemas so the
 * data plane can read them without loading TypeBox.
 */
export const DEFAULTS = {
  listen: { host: '0.0.0.0', port: 8080 },
  /** Edge bounds per client (listen.limits); maxConnections has no default (no bound). */
  limits: {
    headersTimeoutMs: 10_000, // the request head within 10 s (HAProxy's timeout http-request is often 10 s; Node's default is 60 s)
    bodyIdleTimeoutMs: 60_000, // NGINX client_body_timeout is 60 s
    keepAliveTimeoutMs: 5_000, // Node's default; NGINX keepalive_timeout is 75 s
    tunnelIdleTimeoutMs: 300_000, // 5 min, Envoy's default stream idle timeout
  },
  admin: { host: '127.0.0.1', port: 9901 },
  shutdownTimeoutMs: 30_000, // 30 s, like Kubernetes' terminationGracePeriodSeconds
  shutdownDelayMs: 0, // off; set it above the load balancer's readiness-probe period × failure threshold
  workerRestartBackoffMs: 1_000, // --workers: first restart delay of a worker that died; doubles to 30 × this
  rolloutLeaseMs: 5_000, // a dead rollout driver is replaced within this
  retries: 2, // retries on another target of the same upstream
  connectTimeoutMs: 5_000,
  headersTimeoutMs: 60_000, // NGINX proxy_read_timeout is 60 s
  bodyTimeoutMs: 60_000,
  drainTimeoutMs: 30_000, // 30 s, Envoy's default drain time
  passiveEjectMs: 5_000, // without an active health check a failed target comes back after this
  /**
   * Outlier detection, used for an upstream that has `outlierDetection` (off without it, as in
   * Envoy). Envoy's defaults, except maxEjectionPercent: 50 rather than Envoy's 10, which would
   * never eject anything in an upstream of fewer than 10 targets.
   */
  outlierDetection: {
    consecutive5xx: 5,
    consecutiveGatewayFailure: 5,
    baseEjectionMs: 30_000, // 30 s, Envoy's base_ejection_time
    maxEjectionMs: 300_000, // 300 s, Envoy's max_ejection_time
    maxEjectionPercent: 50,
  },
  slowStartMs: 0, // off: a target that joins or comes back gets its full share at once
  healthCheck: { intervalMs: 2_000, timeoutMs: 1_000, healthyThreshold: 2, unhealthyThreshold: 2 },
  // DNS discovery: Envoy's dns_refresh_rate is 5 s; record TTLs are not followed (Envoy's respect_dns_ttl: false)
  discovery: { type: 'A', refreshMs: 5_000, timeoutMs: 5_000 },
  redisPrefix: 'switchyard',
  /** Traffic mirroring: only safe methods unless the route lists others, like Envoy's shadow policy users expect. */
  mirror: {
    methods: ['GET', 'HEAD', 'OPTIONS'],
    maxBodyBytes: 65_536, // 64 KiB: larger bodies are not copied (and answers not compared)
    maxConcurrent: 64, // copies in flight per instance; past it a copy is skipped, never queued
  },
} as const

/**
 * A health check's timeout when none is set: 1 s, or half the interval when that is shorter,
 * so `{intervalMs: 500}` alone is valid (a probe must end before the next one starts).
 */
export function healthTimeoutMs(intervalMs: number): number {
  return Math.min(DEFAULTS.healthCheck.timeoutMs, Math.floor(intervalMs / 2))
}
