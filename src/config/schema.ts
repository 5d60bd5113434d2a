/**
 * TypeBox schemas of the config file (listener, admin, store...): the one source for config
 * validation, TypeScript types and the OpenAPI document. The state's resources it embeds are
 * in `state/schema.ts` and re-exported here for the config's readers.
 */
import Type, { type Static } from 'typebox'
import { FlagSpec, Name, RouteSpec, UpstreamSpec } from '../state/schema.js'

export * from '../state/schema.js'

const Ms = (description: string, minimum = 1) => Type.Integer({ minimum, maximum: 86_400_000, description })

/** Bounds on what one client may hold of the proxy. Defaults in config/defaults.ts. */
export const ListenLimits = Type.Object(
  {
    headersTimeoutMs: Type.Optional(Ms('the whole request head must arrive within this, else 408 and the connection closes (slowloris); default 10000')),
    bodyIdleTimeoutMs: Type.Optional(Ms('longest wait for the next request body byte, else 408 and the upstream request is aborted; default 60000')),
    keepAliveTimeoutMs: Type.Optional(Ms('an idle client keep-alive connection is closed after this; default 5000')),
    maxConnections: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 10_000_000, description: 'client connections open at once (per instance); over it a new connection is closed at once, open ones are unaffected; default: no bound' }),
    ),
    tunnelIdleTimeoutMs: Type.Optional(Ms('a WebSocket (or other upgraded) tunnel with no byte either way for this long is closed; default 300000')),
  },
  { additionalProperties: false },
)
export type ListenLimits = Static<typeof ListenLimits>

/** An IPv4 or IPv6 address or CIDR block, checked in validate.ts. */
export const Cidr = Type.String({ minLength: 2, maxLength: 64, description: 'an address (10.0.0.1, ::1) or a CIDR block (10.0.0.0/8, fd00::/8)' })

export const Listen = Type.Object(
  {
    host: Type.Optional(Type.String({ minLength: 1, maxLength: 253 })),
    port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
    limits: Type.Optional(ListenLimits),
    trustedProxies: Type.Optional(
      Type.Array(Cidr, {
        maxItems: 1024,
        description: 'peers whose X-Forwarded-*, Forwarded and X-Real-IP headers are kept (and appended to); from any other peer they are dropped and set anew; default none',
      }),
    ),
    /** the proxy port serves HTTPS with these PEM files, re-read on SIGHUP */
    tls: Type.Optional(
      Type.Object(
        { cert: Type.String({ minLength: 1, maxLength: 4096 }), key: Type.String({ minLength: 1, maxLength: 4096 }) },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
)

const TokenValue = Type.String({ minLength: 1, maxLength: 4096 })

/**
 * What a token may do: `read` every GET and nothing else; `operator` splits, target states,
 * drains, flags, rollout and replacement control; `admin` everything (the default).
 */
export const TokenRole = Type.Union([Type.Literal('read'), Type.Literal('operator'), Type.Literal('admin')])
export type TokenRole = Static<typeof TokenRole>

export const TokenEntry = Type.Object({ token: TokenValue, role: Type.Optional(TokenRole) }, { additionalProperties: false })

export const Admin = Type.Object(
  {
    host: Type.Optional(Type.String({ minLength: 1, maxLength: 253 })),
    port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
    token: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
    tokens: Type.Optional(Type.Record(Name, Type.Union([TokenValue, TokenEntry]), { additionalProperties: false })),
  },
  { additionalProperties: false },
)

export const StoreConfig = Type.Union([
  Type.Object({ type: Type.Literal('memory') }, { additionalProperties: false }),
  Type.Object(
    {
      type: Type.Literal('redis'),
      url: Type.Optional(Type.String({ pattern: '^rediss?://' })),
      prefix: Type.Optional(Name),
      /** Passed to ioredis as they are (Sentinel, Cluster, TLS...). */
      options: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      seedWaitMs: Type.Optional(
        Ms(
          'a starting instance that finds the store empty waits this long for a running fleet to re-seed it (a Redis restarted empty) before seeding it from this file; 0 seeds at once; default 2000',
          0,
        ),
      ),
    },
    { additionalProperties: false },
  ),
])
export type StoreConfig = Static<typeof StoreConfig>

/** The config file. `upstreams`, `routes` and `flags` seed the state; the rest is static. */
export const ConfigFile = Type.Object(
  {
    listen: Type.Optional(Listen),
    admin: Type.Optional(Admin),
    store: Type.Optional(StoreConfig),
    shutdownTimeoutMs: Type.Optional(Ms('grace period for in-flight requests on SIGTERM', 0)),
    shutdownDelayMs: Type.Optional(Ms('on SIGTERM, time /readyz answers 503 while the proxy still serves, before it stops accepting', 0)),
    workerRestartBackoffMs: Type.Optional(
      Ms('with --workers: a worker that died is restarted after this, doubling with each restart of the same slot up to 30 × this, and back to this once a worker stayed ready 30 × this; default 1000'),
    ),
    rolloutLeaseMs: Type.Optional(
      Ms('TTL of the store lease `rollouts`, renewed every third of it: when the instance driving the rollouts dies, another takes over within this; default 5000', 300),
    ),
    accessLog: Type.Optional(
      Type.Object(
        {
          sample: Type.Number({ minimum: 0, maximum: 1, description: 'share of requests logged (0.01 = one in a hundred, 1 = all); 0 = off' }),
          query: Type.Optional(Type.Boolean({ description: 'log the query string too (off by default: query strings often carry tokens)' })),
        },
        { additionalProperties: false, description: 'an access log line per sampled request (off by default), written off the request path' },
      ),
    ),
    upstreams: Type.Record(Name, UpstreamSpec, { additionalProperties: false }),
    routes: Type.Array(RouteSpec, { maxItems: 10_000 }),
    flags: Type.Optional(Type.Record(Name, FlagSpec, { additionalProperties: false })),
  },
  { additionalProperties: false },
)
export type ConfigFile = Static<typeof ConfigFile>


export { DEFAULTS, healthTimeoutMs } from './defaults.js'
