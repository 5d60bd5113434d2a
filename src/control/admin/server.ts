/**
 * The admin API: a fastify server with the TypeBox type provider, one plugin per
 * resource, one error shape, bearer-token auth and an OpenAPI document built from the same
 * schemas that validate the requests.
 */
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyInstance } from 'fastify'
import Type from 'typebox'
import { installAuth } from './auth.js'
import type { AdminDeps } from './deps.js'
import { BODY_LIMIT, clientErrorHandler, frameworkErrors, installErrorHandling, MAX_PARAM_LENGTH } from './error-handler.js'
import { dashboardPlugin } from './dashboard.js'
import { eventsPlugin } from './events.js'
import { flagsPlugin } from './flags.js'
import { instancesPlugin } from './instances.js'
import { metricsPlugin } from './metrics.js'
import { mirrorPlugin } from './mirror.js'
import { replacePlugin } from './replace.js'
import { rolloutsPlugin } from './rollouts.js'
import { routesPlugin } from './routes.js'
import { statePlugin } from './state.js'
import { statsPlugin } from './stats.js'
import { targetsPlugin } from './targets.js'
import { upstreamsPlugin } from './upstreams.js'
import { ErrorBody } from './schemas.js'
import { strictValidatorCompiler } from './validator.js'

/**
 * Builds (does not listen) the admin server. Every `/api/*` route needs a token when one is
 * configured; `/healthz`, `/readyz`, `/metrics` and the documentation (`/docs`, `/docs/json`)
 * stay open for probes, scrapers and tooling. A known path asked with a method it does not
 * serve answers 405 METHOD_NOT_ALLOWED with `Allow`; an unknown path 404 NOT_FOUND.
 */
export async function createAdminServer(deps: AdminDeps): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    frameworkErrors,
    clientErrorHandler,
  }).withTypeProvider<TypeBoxTypeProvider>()
  app.setValidatorCompiler(strictValidatorCompiler)
  // Response schemas document the API (OpenAPI) and type the handlers; answers are serialized
  // with JSON.stringify. fast-json-stringify would compile ~100 serializers per instance
  // (~150 ms at each start, measured) for documents sent at human rates, and would silently
  // drop any field a schema forgot.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data))
  installErrorHandling(app)
  installAuth(app, deps.tokens)

  // The documentation is read by people and generators before they hold a token.
  app.addHook('onRoute', (route) => {
    if (route.url === '/docs' || route.url.startsWith('/docs/')) route.config = { ...route.config, public: true }
  })

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'switchyard admin API', version: '1', description: 'Drives a switchyard proxy: upstreams, targets, routes and splits, flags, the audit log and the fleet. Every write is revisioned (If-Match, ETag, ?waitApplied); every error is {"error":{"code","message","details"}}.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: deps.tokens.length > 0 ? [{ bearer: [] }] : [],
    },
  })

  const open = { public: true }
  app.get('/healthz', { config: open, schema: { tags: ['health'], operationId: 'getLiveness', summary: 'liveness: 200 while the process serves', response: { 200: Type.Object({ ok: Type.Boolean() }) } } }, async () => ({
    ok: true,
  }))
  app.get(
    '/readyz',
    {
      config: open,
      schema: {
        tags: ['health'],
        operationId: 'getReadiness',
        summary: '200 once the state is loaded; 503 before, and from the moment the instance starts shutting down',
        response: { 200: Type.Object({ ready: Type.Boolean(), revision: Type.Integer() }), 503: ErrorBody },
      },
    },
    async (_req, reply) => {
      // Load balancers stop sending here before the listening socket closes (shutdownDelayMs).
      if (deps.shuttingDown === true) return reply.code(503).send({ error: { code: 'SHUTTING_DOWN', message: 'this instance is shutting down' } })
      if (!deps.control.isReady) return reply.code(503).send({ error: { code: 'STORE_UNAVAILABLE', message: 'the state is not loaded yet' } })
      return { ready: true, revision: deps.control.state.revision }
    },
  )
  // Swagger UI from the npm package (no CDN): `/docs`, with the document at `/docs/json` (and `/docs/yaml`).
  await app.register(swaggerUi, { routePrefix: '/docs' })

  for (const plugin of [statePlugin, upstreamsPlugin, targetsPlugin, replacePlugin, routesPlugin, mirrorPlugin, flagsPlugin, rolloutsPlugin, statsPlugin, dashboardPlugin, eventsPlugin, instancesPlugin]) {
    await app.register(plugin, { deps })
  }
  await app.register(metricsPlugin, { deps })
  return app as unknown as FastifyInstance
}
