/**
 * Defaults, with units; see README "Configuration". Kept apart from the TypeBox schemas so the
 * data plane can read them without loading TypeBox.
 */
export const DEFAULTS = {
  listen: { host: '0.0.0.0', port: 8080 },
  admin: { host: '127.0.0.1', port: 9901 },
  shutdownTimeoutMs: 30_000, // 30 s, like Kubernetes' terminationGracePeriodSeconds
  shutdownDelayMs: 0, // off; set it above the load balancer's readiness-probe period × failure threshold
  retries: 2, // SPEC §4
  connectTimeoutMs: 5_000,
  headersTimeoutMs: 60_000, // NGINX proxy_read_timeout is 60 s
  bodyTimeoutMs: 60_000,
  drainTimeoutMs: 30_000, // 30 s, Envoy's default drain time
  passiveEjectMs: 5_000, // without an active health check a failed target comes back after this
  healthCheck: { intervalMs: 2_000, timeoutMs: 1_000, healthyThreshold: 2, unhealthyThreshold: 2 },
  redisPrefix: 'switchyard',
} as const
