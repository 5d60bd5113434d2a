/**
 * `GET /api/instances`: the live proxy instances of the fleet, from the registry, each marked
 * `laggard` when it has stayed behind the store's revision for more than 5 s.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import type { AdminDeps } from './deps.js'
import { readResponses } from './schemas.js'

export const InstanceSchema = Type.Object({
  id: Type.String(),
  host: Type.String(),
  pid: Type.Integer(),
  appliedRevision: Type.Integer(),
  digest: Type.Optional(
    Type.String({ description: "digest of the content of its applied state: instances at one revision with one digest hold the same state (absent from older versions)" }),
  ),
  behindMs: Type.Optional(Type.Integer({ minimum: 0, description: 'how long its applied revision has been behind the store, by its own account (0: not behind)' })),
  laggard: Type.Boolean({ description: 'behind the store for more than 5 s: it is not following; look at its log' }),
  lastSeen: Type.String({ description: 'ISO 8601 time of its last heartbeat' }),
  inflight: Type.Record(Type.String(), Type.Integer({ minimum: 0 }), { description: 'requests in flight per `upstream/targetId`, as of lastSeen; targets with none are left out' }),
})

export const instancesPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  app.get(
    '/api/instances',
    { schema: { tags: ['instances'], operationId: 'listInstances', summary: 'live instances of the fleet', response: readResponses({ instances: Type.Array(InstanceSchema) }) } },
    async () => ({ instances: await deps.control.fleet.instances() }),
  )
}
