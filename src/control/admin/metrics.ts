/**
 * `GET /metrics`: the Prometheus text exposition. Public like `/healthz`: tokens protect only
 * `/api/*`, and a scraper should not need an admin token that can write.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { METRICS_CONTENT_TYPE } from '../../metrics/metrics.js'
import type { AdminDeps } from './deps.js'

export const metricsPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  app.get(
    '/metrics',
    { config: { public: true }, schema: { tags: ['metrics'], operationId: 'getMetrics', summary: 'Prometheus text format: switchyard_* and Node process metrics; with --workers, the whole process group' } },
    async (_req, reply) => {
      // A string with a non-JSON content type is sent as is, without the JSON serializer.
      return reply.type(METRICS_CONTENT_TYPE).send(await deps.metrics.render())
    },
  )
}
