/** Feature flags: `GET /api/flags`, `GET|PUT|DELETE /api/flags/{name}`. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { FlagSpec, Name } from '../../config/schema.js'
import { deleteFlag, flagOf, putFlag } from '../mutations.js'
import type { AdminDeps } from './deps.js'
import { readResponses, Revision, WaitAppliedQuery, WriteHeaders, writeResponses } from './schemas.js'
import { answerWrite, commit } from './write.js'

const FlagParams = Type.Object({ name: Name })
const FlagView = { name: Name, ...FlagSpec.properties }

export const flagsPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  const { control } = deps
  const tags = ['flags']

  app.get(
    '/api/flags',
    { schema: { tags, summary: 'every flag', response: readResponses({ revision: Revision, flags: Type.Record(Name, FlagSpec) }) } },
    async () => {
      const state = control.state
      return { revision: state.revision, flags: state.flags }
    },
  )

  app.get(
    '/api/flags/:name',
    { schema: { tags, params: FlagParams, response: readResponses({ revision: Revision, ...FlagView }) } },
    async (req) => {
      const state = control.state
      return { revision: state.revision, name: req.params.name, ...flagOf(state, req.params.name) }
    },
  )

  app.put(
    '/api/flags/:name',
    {
      schema: {
        tags,
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
    { schema: { tags, summary: 'remove a flag', params: FlagParams, headers: WriteHeaders, querystring: WaitAppliedQuery, response: writeResponses({ name: Name }) } },
    async (req, reply) => {
      const { name } = req.params
      const { revision } = await commit(control, req, deleteFlag(name))
      return answerWrite(control, reply, 200, revision, { name }, req.query.waitApplied)
    },
  )
}
