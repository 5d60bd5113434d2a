/** Upstreams: `GET|PUT|DELETE /api/upstreams/{name}`. Targets have their own plugin (targets.ts). */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Name, UpstreamSpec, type State, type Upstream } from '../../config/schema.js'
import { normalizeState, validateState } from '../../config/validate.js'
import { SwitchyardError } from '../../errors.js'
import type { AdminDeps } from './deps.js'
import {
  readResponses,
  Revision,
  StoredUpstream,
  UpstreamParams,
  WaitAppliedQuery,
  WriteHeaders,
  writeResponses,
} from './schemas.js'
import { answerWrite, commit, validationError } from './write.js'

/** Throws 404 unless `state` has upstream `name`. */
export function upstreamOf(state: State, name: string): Upstream {
  const upstream = Object.hasOwn(state.upstreams, name) ? state.upstreams[name] : undefined
  if (upstream === undefined) throw new SwitchyardError('NOT_FOUND', `no upstream ${JSON.stringify(name)}`)
  return upstream
}

/** Routes whose split or rules name `upstream` (even at weight 0: the split would become invalid). */
export function routesUsing(state: State, upstream: string): string[] {
  return state.routes
    .filter((r) => Object.hasOwn(r.split, upstream) || (r.rules ?? []).some((rule) => rule.upstream === upstream))
    .map((r) => r.name)
}

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

export const upstreamsPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  const { control } = deps

  app.get(
    '/api/upstreams/:name',
    { schema: { tags: ['upstreams'], params: UpstreamParams, response: readResponses({ revision: Revision, ...UpstreamView }) } },
    async (req) => {
      const state = control.state
      return { revision: state.revision, name: req.params.name, ...upstreamOf(state, req.params.name) }
    },
  )

  app.put(
    '/api/upstreams/:name',
    {
      schema: {
        tags: ['upstreams'],
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
      let created = false
      const { revision } = await commit(control, req, (draft) => {
        const before = Object.hasOwn(draft.upstreams, name) ? draft.upstreams[name] : undefined
        created = before === undefined
        draft.upstreams[name] = upstream
        return { action: 'upstream.put', target: `upstreams/${name}`, before: before ?? null, after: upstream, result: null }
      })
      return answerWrite(control, reply, created ? 201 : 200, revision, { name, ...upstream }, req.query.waitApplied)
    },
  )

  app.delete(
    '/api/upstreams/:name',
    {
      schema: {
        tags: ['upstreams'],
        summary: 'remove an upstream (409 while a route uses it)',
        params: UpstreamParams,
        headers: WriteHeaders,
        querystring: WaitAppliedQuery,
        response: writeResponses({ name: Name }),
      },
    },
    async (req, reply) => {
      const { name } = req.params
      const { revision } = await commit(control, req, (draft) => {
        const before = upstreamOf(draft, name)
        const users = routesUsing(draft, name)
        if (users.length > 0) {
          throw new SwitchyardError('CONFLICT', `upstream ${JSON.stringify(name)} is used by route(s) ${users.join(', ')}`, {
            details: users.map((r) => ({ route: r })),
          })
        }
        delete draft.upstreams[name]
        return { action: 'upstream.delete', target: `upstreams/${name}`, before, after: null, result: null }
      })
      return answerWrite(control, reply, 200, revision, { name }, req.query.waitApplied)
    },
  )
}
