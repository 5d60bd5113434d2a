/** `GET /api/state`: this instance's applied state, not a read-through to the store (comparing two instances shows propagation). */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { FlagSpec, Name, RouteSpec } from '../../config/schema.js'
import { rolloutsOf } from '../../rollout/mutations.js'
import { redact } from '../../rollout/plan.js'
import { Rollout } from '../../rollout/schema.js'
import type { AdminDeps } from './deps.js'
import { etag, readResponses, Revision, StoredUpstream } from './schemas.js'

export const StateBody = {
  revision: Revision,
  upstreams: Type.Record(Name, StoredUpstream),
  routes: Type.Array(RouteSpec),
  flags: Type.Record(Name, FlagSpec),
  rollouts: Type.Record(Name, Rollout, { description: 'rollouts by id (webhook secrets shown as ***)' }),
}

export const statePlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  app.get(
    '/api/state',
    { schema: { tags: ['state'], operationId: 'getState', summary: 'the applied state', response: readResponses(StateBody) } },
    async (_req, reply) => {
      // One read of the reference: the answer is one consistent revision even if a write lands meanwhile.
      const state = deps.control.state
      etag(reply, state.revision)
      const rollouts = rolloutsOf(state)
      const ids = Object.keys(rollouts)
      if (!ids.some((id) => rollouts[id]!.spec.notify?.some((n) => n.secret !== undefined))) return { ...state, rollouts }
      return { ...state, rollouts: Object.fromEntries(ids.map((id) => [id, redact(rollouts[id]!)])) }
    },
  )
}
