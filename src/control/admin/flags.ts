/** Feature flags: `GET /api/flags`, `GET|PUT|DELETE /api/flags/{name}`. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { FlagSpec, Name } from '../../config/schema.js'
import { deleteFlag, flagOf, putFlag } from '../mutations.js'
import type { AdminDeps } from './deps.js'
import { etag, readResponses, Revision, WaitAppliedQuery, WriteHeaders, writeResponses } from './schemas.js'
import { answerWrite, commit } from './write.js'

const FlagParams = Type.Object({ name: Name })
const FlagView = { name: Name, ...FlagSpec.properties }

export const flagsPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  const { control } = deps
  const tags = ['flags']

  app.get(
    '/api/flags',
    {
      schema: {
        tags,
        operationId: 'listFlags',
        summary: 'every flag, by name',
        response: readResponses({ revision: Revision, flags: Type.Array(Type.Object(FlagView)) }),
      },
    },
    async (_req, reply) => {
      const state = control.state
      etag(reply, state.revision)
      const names = Object.keys(state.flags).sort()
      return { revision: state.revision, flags: names.map((name) => ({ name, ...state.flags[name]! })) }
    },
  )

  app.get(
    '/api/flags/:name',
    { schema: { tags, operationId: 'getFlag', summary: 'a flag', params: FlagParams, response: readResponses({ revision: Revision, ...FlagView }) } },
    async (req, reply) => {
      const state = control.state
      const flag = flagOf(state, req.params.name)
      etag(reply, state.revision)
      return { revision: state.revision, name: req.params.name, ...flag }
    },
  )

  app.put(
    '/api/flags/:name',
    {
      config: { role: 'operator' },
      schema: {
        tags,
        operationId: 'putFlag',
        summary: 'create or replace a flag',
        params: FlagParams,
        headers: WriteHeaders,
        querystring: WaitAppliedQuery,
        body: FlagSpec,
        response: writeResponses(FlagView, true),
      },
    },
    async (req, reply) => {
      const { name } = req.params
      const flag = req.body
      const { revision, result } = await commit(control, req, putFlag(name, flag))
      return answerWrite(control, reply, result.created ? 201 : 200, revision, { name, ...flag }, req.query.waitApplied)
    },
  )

  app.delete(
    '/api/flags/:name',
    { config: { role: 'operator' }, schema: { tags, operationId: 'deleteFlag', summary: 'remove a flag', params: FlagParams, headers: WriteHeaders, querystring: WaitAppliedQuery, response: writeResponses({ name: Name }) } },
    async (req, reply) => {
      const { name } = req.params
      const { revision } = await commit(control, req, deleteFlag(name))
      return answerWrite(control, reply, 200, revision, { name }, req.query.waitApplied)
    },
  )
}
