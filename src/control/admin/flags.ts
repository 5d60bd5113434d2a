/** Feature flags: `GET /api/flags`, `GET|PUT|DELETE /api/flags/{name}`. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { FlagSpec, Name, type State } from '../../config/schema.js'
import { SwitchyardError } from '../../errors.js'
import type { AdminDeps } from './deps.js'
import { readResponses, Revision, WaitAppliedQuery, WriteHeaders, writeResponses } from './schemas.js'
import { answerWrite, commit } from './write.js'

const FlagParams = Type.Object({ name: Name })
const FlagView = { name: Name, ...FlagSpec.properties }

function flagOf(state: State, name: string): FlagSpec {
  const flag = Object.hasOwn(state.flags, name) ? state.flags[name] : undefined
  if (flag === undefined) throw new SwitchyardError('NOT_FOUND', `no flag ${JSON.stringify(name)}`)
  return flag
}

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
      let created = false
      const { revision } = await commit(control, req, (draft) => {
        const before = Object.hasOwn(draft.flags, name) ? draft.flags[name] : undefined
        created = before === undefined
        draft.flags[name] = structuredClone(flag)
        return { action: 'flag.put', target: `flags/${name}`, before: before ?? null, after: flag, result: null }
      })
      return answerWrite(control, reply, created ? 201 : 200, revision, { name, ...flag }, req.query.waitApplied)
    },
  )

  app.delete(
    '/api/flags/:name',
    { schema: { tags, summary: 'remove a flag', params: FlagParams, headers: WriteHeaders, querystring: WaitAppliedQuery, response: writeResponses({ name: Name }) } },
    async (req, reply) => {
      const { name } = req.params
      const { revision } = await commit(control, req, (draft) => {
        const before = flagOf(draft, name)
        delete draft.flags[name]
        return { action: 'flag.delete', target: `flags/${name}`, before, after: null, result: null }
      })
      return answerWrite(control, reply, 200, revision, { name }, req.query.waitApplied)
    },
  )
}
