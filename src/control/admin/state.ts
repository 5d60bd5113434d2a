/** `GET /api/state`: this instance's applied state, not a read-through to the store (comparing two instances shows propagation). */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { FlagSpec, Name, RouteSpec } from '../../config/schema.js'
import type { AdminDeps } from './deps.js'
import { readResponses, Revision, StoredUpstream } from './schemas.js'

export const StateBody = {
  revision: Revision,
  upstreams: Type.Record(Name, StoredUpstream),
  routes: Type.Array(RouteSpec),
  flags: Type.Record(Name, FlagSpec),
  rollouts: Type.Record(Type.String(), Type.Unknown()),
}

export const statePlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  app.get(
    '/api/state',
    { schema: { tags: ['state'], summary: 'the applied state', response: readResponses(StateBody) } },
    async (_req, reply) => {
      // One read of the reference: the answer is one consistent revision even if a write lands meanwhile.
      const state = deps.control.state
      reply.header('etag', `"${state.revision}"`)
      return state
    },
  )
}
