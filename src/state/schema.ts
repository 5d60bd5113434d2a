/**
 * The state's resources as TypeBox schemas (upstreams, targets, routes, flags) and the
 * revisioned `State` itself: the one source for validation, TypeScript types and the OpenAPI
 * document, shared by the config file, the stores, the control plane and the data plane.
 * Semantic checks a schema cannot express (names referenced by a split exist, weights not all
 * zero, ...) live in `config/validate.ts`.
 */
import Type, { type Static } from 'typebox'

export const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'
export const TARGET_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'

export const Name = Type.String({ pattern: NAME_PATTERN, description: 'name of an upstream, route or flag' })
export const TargetId = Type.String({ pattern: TARGET_ID_PATTERN, description: 'target id; default host:port of its url' })
export const TargetState = Type.Union([Type.Literal('active'), Type.Literal('draining'), Type.Literal('disabled')])
export type TargetState = Static<typeof TargetState>

const Ms = (description: string, minimum = 1) => Type.Integer({ minimum, maximum: 86_400_000, description })

export const TargetSpec = Type.Object(
  {
    url: Type.String({ minLength: 1, maxLength: 2048, description: 'http://host:port of the instance' }),
    id: Type.Optional(TargetId),
    state: Type.Optional(TargetState),
  },
  { additionalProperties: false },
)
export type TargetSpec = Static<typeof TargetSpec>

export const HealthCheck = Type.Object(
  {
    path: Type.String({ pattern: '^/', maxLength: 2048 }),
    intervalMs: Type.Optional(Ms('time between probes', 50)),
    timeoutMs: Type.Optional(Ms('probe timeout')),
    healthyThreshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    unhealthyThreshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
  },
  { additionalProperties: false },
)
export type HealthCheck = Static<typeof HealthCheck>

/**
 * Passive outlier detection (Envoy's consecutive_5xx and consecutive_gateway_failure): a target
 * answering too many errors in a row is taken out of the balancing for a while. Every field is
 * optional; `outlierDetection: {}` turns it on with the defaults.
 */
export const OutlierDetection = Type.Object(
  {
    consecutive5xx: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 10_000, description: '5xx answers in a row (the proxy\'s own 502/504 included) that eject a target; 0 = never; default 5' }),
    ),
    consecutiveGatewayFailure: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 10_000, description: '502/503/504 answers or connect, reset and timeout failures in a row that eject a target; 0 = never; default 5' }),
    ),
    baseEjectionMs: Type.Optional(Ms('an ejection lasts this × the number of ejections in a row; default 30000')),
    maxEjectionMs: Type.Optional(Ms('upper bound of one ejection; default 300000')),
    maxEjectionPercent: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 100, description: 'at most this share of the active targets is ejected at once; default 50' }),
    ),
  },
  { additionalProperties: false },
)
export type OutlierDetection = Static<typeof OutlierDetection>

export const Balance = Type.Union([Type.Literal('least-request'), Type.Literal('p2c')])

/**
 * DNS target discovery: the addresses a name resolves to become targets of the upstream, on
 * every instance by its own lookups, outside the revisioned state (README "DNS discovery").
 * The name and servers are checked in `validate.ts`.
 */
export const DnsDiscovery = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 254, description: 'DNS name to resolve, e.g. api.internal or _http._tcp.api.internal for SRV' }),
    type: Type.Optional(Type.Union([Type.Literal('A'), Type.Literal('AAAA'), Type.Literal('SRV')])),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'port of the targets (A, AAAA); SRV records carry their own' })),
    refreshMs: Type.Optional(Ms('time between lookups', 50)),
    timeoutMs: Type.Optional(Ms('how long one lookup may take before it counts as failed', 10)),
    servers: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 64 }), {
        minItems: 1,
        maxItems: 8,
        description: 'DNS servers to ask, as ip or ip:port ([ip6]:port); default: the system resolver configuration',
      }),
    ),
  },
  { additionalProperties: false },
)
export type DnsDiscovery = Static<typeof DnsDiscovery>

export const Discovery = Type.Object({ dns: DnsDiscovery }, { additionalProperties: false })
export type Discovery = Static<typeof Discovery>

const PemPaths = Type.Union([Type.String({ minLength: 1, maxLength: 4096 }), Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), { minItems: 1, maxItems: 16 })])

/** How the proxy talks TLS to the upstream's https:// targets. Verification is on unless turned off. */
export const UpstreamTls = Type.Object(
  {
    /** PEM file path(s) of the CAs to trust instead of Node's default ones; read by the control plane. */
    ca: Type.Optional(PemPaths),
    /** the name sent in SNI and checked against the certificate (default: the target's host; none for an IP) */
    servername: Type.Optional(Type.String({ minLength: 1, maxLength: 253 })),
    /** dangerous: accepts any certificate, so anyone on the path can read and change the traffic */
    insecureSkipVerify: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
)
export type UpstreamTls = Static<typeof UpstreamTls>

/**
 * Envoy's circuit breakers, per proxy instance (per worker): past them a request to the upstream
 * is answered 503 UPSTREAM_OVERLOADED at once, instead of queuing without bound. Unset = no bound.
 */
export const CircuitBreaker = Type.Object(
  {
    maxConcurrent: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'requests in flight to the upstream (all its targets) at once, per instance; past it 503 UPSTREAM_OVERLOADED' }),
    ),
    maxPending: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1_000_000,
        description: 'requests sent to the upstream and waiting for a connection (being connected, or none free), per instance; while this many wait, new ones get 503 UPSTREAM_OVERLOADED',
      }),
    ),
  },
  { additionalProperties: false, minProperties: 1 },
)
export type CircuitBreaker = Static<typeof CircuitBreaker>

export const UpstreamSpec = Type.Object(
  {
    /** May be left out when `discovery` provides the targets. */
    targets: Type.Optional(Type.Array(TargetSpec, { maxItems: 1000 })),
    discovery: Type.Optional(Discovery),
    healthCheck: Type.Optional(HealthCheck),
    balance: Type.Optional(Balance),
    retries: Type.Optional(Type.Integer({ minimum: 0, maximum: 10 })),
    connectTimeoutMs: Type.Optional(Ms('TCP connect timeout')),
    headersTimeoutMs: Type.Optional(Ms('time to response headers')),
    bodyTimeoutMs: Type.Optional(Ms('idle time between body chunks')),
    drainTimeoutMs: Type.Optional(Ms('how long a WebSocket may outlive its draining target', 0)),
    outlierDetection: Type.Optional(OutlierDetection),
    slowStartMs: Type.Optional(Ms('a target that joins or comes back ramps up to its full share over this time; 0 = off', 0)),
    tls: Type.Optional(UpstreamTls),
    circuitBreaker: Type.Optional(CircuitBreaker),
  },
  { additionalProperties: false },
)
export type UpstreamSpec = Static<typeof UpstreamSpec>

/** A header, cookie or query value matcher: exact (case-sensitive) or a regex. */
export const StringMatch = Type.Union([
  Type.String({ maxLength: 4096 }),
  Type.Object({ regex: Type.String({ minLength: 1, maxLength: 1024 }) }, { additionalProperties: false }),
])
export type StringMatch = Static<typeof StringMatch>

const MatchMap = (key: ReturnType<typeof Type.String>) =>
  Type.Record(key, StringMatch, { additionalProperties: false, minProperties: 1 })

export const HeaderName = Type.String({ pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$" })
export const CookieName = Type.String({ pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$" })
export const QueryName = Type.String({ pattern: '^.{1,256}$' })

export const RuleMatch = Type.Object(
  {
    header: Type.Optional(MatchMap(HeaderName)),
    cookie: Type.Optional(MatchMap(CookieName)),
    query: Type.Optional(MatchMap(QueryName)),
  },
  { additionalProperties: false, minProperties: 1 },
)
export type RuleMatch = Static<typeof RuleMatch>

export const Rule = Type.Object({ match: RuleMatch, upstream: Name }, { additionalProperties: false })
export type Rule = Static<typeof Rule>

export const Method = Type.String({ pattern: '^[A-Z]{1,16}$' })

export const RouteMatch = Type.Object(
  {
    host: Type.Optional(Type.String({ pattern: '^(\\*|[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?)$' })),
    pathPrefix: Type.Optional(Type.String({ pattern: '^/', maxLength: 2048 })),
    methods: Type.Optional(Type.Array(Method, { minItems: 1, maxItems: 16 })),
  },
  { additionalProperties: false },
)
export type RouteMatch = Static<typeof RouteMatch>

/** Weights between upstreams: integers >= 0, need not sum to 100, not all zero. */
export const Split = Type.Record(Name, Type.Integer({ minimum: 0, maximum: 1_000_000 }), {
  additionalProperties: false,
  minProperties: 1,
})
export type Split = Static<typeof Split>

export const Sticky = Type.Object(
  {
    by: Type.Union([Type.Literal('header'), Type.Literal('cookie'), Type.Literal('ip')]),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
  },
  { additionalProperties: false },
)
export type Sticky = Static<typeof Sticky>

/**
 * Traffic mirroring: a share of a route's requests is copied to another upstream (the shadow),
 * whose answer is compared with the client's and dropped. Limits default in config/defaults.ts.
 */
export const MirrorSpec = Type.Object(
  {
    upstream: Name,
    percent: Type.Number({ minimum: 0, maximum: 100, description: 'share of the route\'s requests copied to the shadow upstream, percent' }),
    methods: Type.Optional(Type.Array(Method, { minItems: 1, maxItems: 16, description: 'methods that are mirrored; default GET, HEAD, OPTIONS (a copy of a write could have side effects)' })),
    maxBodyBytes: Type.Optional(Type.Integer({ minimum: 0, maximum: 16_777_216, description: 'largest request body copied, and largest answer body compared; default 65536' })),
    maxConcurrent: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000, description: 'copies in flight per proxy instance (per worker); past it copies are skipped; default 64' })),
    ignore: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 256, description: 'JSON field names the comparison ignores at any depth (timestamps, ids)' })),
  },
  { additionalProperties: false },
)
export type MirrorSpec = Static<typeof MirrorSpec>

export const RouteSpec = Type.Object(
  {
    name: Name,
    match: Type.Optional(RouteMatch),
    rules: Type.Optional(Type.Array(Rule, { maxItems: 256 })),
    split: Split,
    sticky: Type.Optional(Sticky),
    /**
     * Forward the request path exactly as the client sent it. By default the upstream gets the
     * normalized path (dot segments resolved) and paths that backends resolve in surprising ways
     * (`..;`, `\\`, `%5C`, an encoded slash in a dot segment) are refused with 400; route matching
     * uses the normalized path either way.
     */
    preservePath: Type.Optional(
      Type.Boolean({ description: 'forward the path as sent (dot segments not resolved, `..;`, `\\` and `%5C` not refused); matching still uses the normalized path' }),
    ),
    mirror: Type.Optional(MirrorSpec),
    maxBodyBytes: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 1_099_511_627_776, description: 'largest request body accepted; over it 413 PAYLOAD_TOO_LARGE (before any upstream is contacted when Content-Length says so); default: no bound' }),
    ),
    upgrades: Type.Optional(
      Type.Array(Type.String({ pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z/-]{1,64}$" }), {
        maxItems: 16,
        description: 'Upgrade protocols proxied on this route besides websocket (e.g. h2c is not one to list); case-insensitive',
      }),
    ),
  },
  { additionalProperties: false },
)
export type RouteSpec = Static<typeof RouteSpec>

/** Who a flag's percentage is decided by; same bucketing as sticky routing. */
export const FlagBy = Type.Object(
  {
    header: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    cookie: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    ip: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
)

export const FlagSpec = Type.Object(
  {
    enabled: Type.Boolean(),
    percent: Type.Optional(Type.Number({ minimum: 0, maximum: 100 })),
    by: Type.Optional(FlagBy),
  },
  { additionalProperties: false },
)
export type FlagSpec = Static<typeof FlagSpec>

/** A target inside the state: id and state are always filled in. */
export interface Target {
  id: string
  url: string
  state: TargetState
}

export interface Upstream extends Omit<UpstreamSpec, 'targets'> {
  targets: Target[]
}

/**
 * The revisioned, shared state (what `GET /api/state` shows). Every accepted write makes a new
 * object with `revision + 1`; states are never mutated in place once published.
 */
export interface State {
  revision: number
  upstreams: Record<string, Upstream>
  routes: RouteSpec[]
  flags: Record<string, FlagSpec>
  rollouts: Record<string, unknown>
}
