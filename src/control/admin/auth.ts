/**
 * Bearer-token auth for the admin API. Default deny: with a token configured every
 * route needs it unless it is marked `config: { public: true }` (liveness, readiness, the
 * OpenAPI document), so a route added later is protected without anyone remembering to.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { SwitchyardError } from '../../errors.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** who makes a write, for the audit log: the matched token's name, or `anonymous` without auth */
    actor: string
  }
  interface FastifyContextConfig {
    /** reachable without a token */
    public?: boolean
  }
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

/**
 * `tokens` is read at each request, so a reload (SIGHUP) that changes `admin.token(s)` takes
 * effect at once; the digests are recomputed only when the list changed.
 */
export function installAuth(app: FastifyInstance, tokens: { name: string; token: string }[]): void {
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
    if (actor === undefined) {
      reply.header('www-authenticate', 'Bearer realm="switchyard"')
      throw new SwitchyardError('UNAUTHORIZED', m ? 'the bearer token is not valid' : 'Authorization: Bearer <token> is required')
    }
    req.actor = actor
  })
}
