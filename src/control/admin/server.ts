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
import { installAuth, requiredRole } from './auth.js'
import { installBrowserChecks, PAGE_CSP } from './browser.js'
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
 * configured, with the role the route names (auth.ts); `/healthz`, `/readyz`, `/metrics` and
 * the documentation (`/docs`, `/docs/json`) stay open for probes, scrapers and tooling.
 * Without a token, browsers' requests are checked instead (browser.ts). A known path asked with
 * a method it does not serve answers 405 METHOD_NOT_ALLOWED with `Allow`; an unknown path 404
 * NOT_FOUND. `host` is the address it will listen on (`admin.host`): a Host it accepts.
 */
export async function createAdminServer(deps: AdminDeps, opts: { host?: string } = {}): Promise<FastifyInstance> {
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
  installBrowserChecks(app, deps.tokens, opts.host)
  installAuth(app, deps.tokens)

  app.addHook('onRoute', (route) => {
    // The documentation is read by people and generators before they hold a token.
    if (route.url === '/docs' || route.url.startsWith('/docs/')) route.config = { ...route.config, public: true }
    // Each operation says which token role it needs (`x-switchyard-role`, and in its description).
    const schema = route.schema as { hide?: boolean; description?: string; [k: string]: unknown } | undefined
    if (schema === undefined || schema.hide === true || route.config?.public === true) return
    const role = requiredRole([route.method].flat()[0]!.toUpperCase(), route.config?.role)
    const needs = role === 'admin' ? 'a token with role admin' : `a token with role ${role} or above`
    const description = `${schema.description === undefined ? '' : `${schema.description}\n\n`}Needs ${needs} when tokens are configured.`
    // @fastify/swagger copies an operation schema's `x-` keys into the OpenAPI operation.
    route.schema = { ...schema, 'x-switchyard-role': role, description } as typeof route.schema
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
  // Under PAGE_CSP: the index loads only files (no inline script); the base layout drops the
  // top bar, whose logo is an inline <style> and a data: image the policy would block.
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: PAGE_CSP, uiConfig: { layout: 'BaseLayout' } })

  for (const plugin of [statePlugin, upstreamsPlugin, targetsPlugin, replacePlugin, routesPlugin, mirrorPlugin, flagsPlugin, rolloutsPlugin, statsPlugin, dashboardPlugin, eventsPlugin, instancesPlugin]) {
    await app.register(plugin, { deps })
  }
  await app.register(metricsPlugin, { deps })
  return app as unknown as FastifyInstance
}
