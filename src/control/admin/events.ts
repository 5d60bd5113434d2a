/** `GET /api/events?limit=N`: the audit log, newest first. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { redactEvent } from '../../rollout/plan.js'
import type { AdminDeps } from './deps.js'
import { readResponses } from './schemas.js'

export const AuditEventSchema = Type.Object({
  revision: Type.Integer(),
  at: Type.String({ description: 'ISO 8601' }),
  actor: Type.String({ description: 'name of the token used, `anonymous` without auth, `rollout:<id>` ...' }),
  reason: Type.Union([Type.String(), Type.Null()], { description: 'X-Switchyard-Reason' }),
  action: Type.String({ description: 'e.g. split.put, target.drain' }),
  target: Type.String({ description: 'e.g. routes/api/split' }),
  before: Type.Unknown(),
  after: Type.Unknown(),
})

/** 100 by default, like most paginated APIs; 1000 at most keeps one answer small. */
const DEFAULT_LIMIT = 100

export const eventsPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  app.get(
    '/api/events',
    {
      schema: {
        tags: ['events'],
        operationId: 'listEvents',
        summary: 'the audit log, newest first',
        querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: DEFAULT_LIMIT })) }),
        response: readResponses({ events: Type.Array(AuditEventSchema) }),
      },
    },
    async (req) => ({ events: (await deps.control.store.events(req.query.limit ?? DEFAULT_LIMIT)).map(redactEvent) }),
  )
}
