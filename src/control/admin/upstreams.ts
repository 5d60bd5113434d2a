/** Upstreams: `GET /api/upstreams`, `GET|PUT|DELETE /api/upstreams/{name}`. Targets have their own plugin (targets.ts). */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { Name, UpstreamSpec, type State, type Upstream } from '../../config/schema.js'
import { normalizeState, validateState } from '../../config/validate.js'
import { deleteUpstream, putUpstream, upstreamOf } from '../mutations.js'
import { isProvided } from '../providers/provider.js'
import type { AdminDeps } from './deps.js'
import {
  etag,
  readResponses,
  Revision,
  StoredTarget,
  StoredUpstream,
  UpstreamParams,
  WaitAppliedQuery,
  WriteHeaders,
  writeResponses,
} from './schemas.js'
import { answerWrite, commit, validationError } from './write.js'

/**
 * Checks an upstream on its own (target urls, duplicate ids, health-check timing) and fills in
 * target ids and states. Done before the write because a default id needs a parseable url.
 */
export function normalizeUpstream(name: string, spec: UpstreamSpec): Upstream {
  const alone = { upstreams: { [name]: spec }, routes: [] }
  const problems = validateState(alone)
  if (problems.length > 0) throw validationError(problems)
  const upstream = normalizeState(alone).upstreams[name]
  if (upstream === undefined) throw new Error('normalizeState lost an upstream')
  return upstream
}

const UpstreamView = { name: Name, ...StoredUpstream.properties }

/** Targets found by DNS discovery: not in the store, so apart from `targets` (which a PUT replaces). */
const Discovered = Type.Array(Type.Object({ ...StoredTarget.properties, source: Type.Literal('dns') }), {
  description: 'targets found by DNS discovery on this instance (draining ones have vanished from DNS)',
})

const UpstreamRead = Type.Object({ ...UpstreamView, discovered: Type.Optional(Discovered) })

export const upstreamsPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  const { control } = deps

  /** An upstream as reads show it: with its discovered targets when it has discovery. */
  const view = (state: State, name: string) => {
    const upstream = upstreamOf(state, name)
    const discovered = (control.follower.effective.upstreams[name]?.targets ?? []).filter(isProvided)
    const base = { name, ...upstream }
    return upstream.discovery !== undefined || discovered.length > 0 ? { ...base, discovered } : base
  }

  app.get(
    '/api/upstreams',
    {
      schema: {
        tags: ['upstreams'],
        operationId: 'listUpstreams',
        summary: 'every upstream, by name',
        response: readResponses({ revision: Revision, upstreams: Type.Array(UpstreamRead) }),
      },
    },
    async (_req, reply) => {
      const state = control.state
      etag(reply, state.revision)
      const names = Object.keys(state.upstreams).sort()
      return { revision: state.revision, upstreams: names.map((name) => view(state, name)) }
    },
  )

  app.get(
    '/api/upstreams/:name',
    {
      schema: {
        tags: ['upstreams'],
        operationId: 'getUpstream',
        summary: 'an upstream, with the targets DNS discovery found for it',
        params: UpstreamParams,
        response: readResponses({ revision: Revision, ...UpstreamRead.properties }),
      },
    },
    async (req, reply) => {
      const state = control.state
      const body = { revision: state.revision, ...view(state, req.params.name) }
      etag(reply, state.revision)
      return body
    },
  )

  app.put(
    '/api/upstreams/:name',
    {
      schema: {
        tags: ['upstreams'],
        operationId: 'putUpstream',
        summary: 'create or replace an upstream',
        params: UpstreamParams,
        headers: WriteHeaders,
        querystring: WaitAppliedQuery,
        body: UpstreamSpec,
        response: writeResponses(UpstreamView, true),
      },
    },
    async (req, reply) => {
      const { name } = req.params
      const upstream = normalizeUpstream(name, req.body)
      const { revision, result } = await commit(control, req, putUpstream(name, upstream))
      return answerWrite(control, reply, result.created ? 201 : 200, revision, { name, ...upstream }, req.query.waitApplied)
    },
  )

  app.delete(
    '/api/upstreams/:name',
    {
      schema: {
        tags: ['upstreams'],
        operationId: 'deleteUpstream',
        summary: 'remove an upstream (409 while a route uses it)',
        params: UpstreamParams,
        headers: WriteHeaders,
        querystring: WaitAppliedQuery,
        response: writeResponses({ name: Name }),
      },
    },
    async (req, reply) => {
      const { name } = req.params
      const { revision } = await commit(control, req, deleteUpstream(name))
      return answerWrite(control, reply, 200, revision, { name }, req.query.waitApplied)
    },
  )
}
