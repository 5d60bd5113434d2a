/**
 * Bearer-token auth and token roles for the admin API. Default deny: with a token configured
 * every route needs it unless it is marked `config: { public: true }` (liveness, readiness,
 * metrics, the OpenAPI document, the dashboard's static files), so a route added later is
 * protected without anyone remembering to. Roles follow HAProxy's stats socket levels: a
 * route names the least role that may call it (`config: { role }`); one that names none needs
 * `read` for GET/HEAD and `admin` for anything else, so a write added later is admin-only.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TokenRole } from '../../config/schema.js'
import { SwitchyardError } from '../../errors.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** who makes a write, for the audit log: the matched token's name, or `anonymous` without auth */
    actor: string
  }
  interface FastifyContextConfig {
    /** reachable without a token */
    public?: boolean
    /** the least token role that may call this route (default: read for GET/HEAD, admin otherwise) */
    role?: TokenRole
  }
}

/** Each role may do what the ones before it may. */
const RANK: Record<TokenRole, number> = { read: 0, operator: 1, admin: 2 }

/** The role a route needs: the one it declares, else read for a read, admin for anything else. */
export function requiredRole(method: string, declared: TokenRole | undefined): TokenRole {
  return declared ?? (method === 'GET' || method === 'HEAD' ? 'read' : 'admin')
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest()

/**
 * Returns the name of the token `presented` equals, or undefined. Comparing fixed-size
 * digests with timingSafeEqual makes the time independent of where (and of how long) the
 * strings differ; every configured token is compared, so the time does not tell which matched.
 */
export function tokenMatcher(tokens: { name: string; token: string }[]): (presented: string) => string | undefined {
  const digests = tokens.map(({ name, token }) => ({ name, digest: sha256(token) }))
  return (presented) => {
    const digest = sha256(presented)
    let found: string | undefined
    for (const t of digests) if (timingSafeEqual(digest, t.digest) && found === undefined) found = t.name
    return found
  }
}

/** `PUT /api/routes/:name/split` for a message: the route's pattern, not the caller's values. */
const callOf = (req: FastifyRequest) => `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`

/**
 * `tokens` is read at each request, so a reload (SIGHUP) that changes `admin.token(s)` takes
 * effect at once; the digests are recomputed only when the list changed.
 */
export function installAuth(app: FastifyInstance, tokens: { name: string; token: string; role: TokenRole }[]): void {
  app.decorateRequest('actor', 'anonymous')
  let cachedKey = ''
  let match = tokenMatcher([])
  app.addHook('onRequest', async (req, reply) => {
    if (tokens.length === 0 || req.routeOptions.config?.public === true) return
    const key = JSON.stringify(tokens)
    if (key !== cachedKey) {
      cachedKey = key
      match = tokenMatcher(tokens)
    }
    // RFC 6750 §2.1: `Bearer` is case-insensitive; the token is one b64token.
    const m = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '')
    const actor = m?.[1] === undefined ? undefined : match(m[1])
    // Names are unique (admin.token is `token`, and it excludes admin.tokens).
    const found = actor === undefined ? undefined : tokens.find((t) => t.name === actor)
    if (found === undefined) {
      reply.header('www-authenticate', 'Bearer realm="switchyard"')
      throw new SwitchyardError('UNAUTHORIZED', m ? 'the bearer token is not valid' : 'Authorization: Bearer <token> is required')
    }
    const needed = requiredRole(req.method, req.routeOptions.config?.role)
    if (RANK[found.role] < RANK[needed]) {
      throw new SwitchyardError('FORBIDDEN', `token ${JSON.stringify(found.name)} has role ${found.role}; ${callOf(req)} needs role ${needed} or above`)
    }
    req.actor = found.name
  })
}
