/**
 * Routes: `GET /api/routes` (in match order), `GET|PUT|DELETE /api/routes/{name}` and the live canary knob `PUT /api/routes/{name}/split`.
 * While a rollout drives a route, these writes answer 409 unless `?force=true` (which aborts it).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { Name, RouteSpec, Split, type RouteSpec as Route } from '../../config/schema.js'
import { normalizeState } from '../../config/validate.js'
import { deleteRoute, indexOfRoute, putRoute, setSplit } from '../mutations.js'
import type { AdminDeps } from './deps.js'
import { guarded } from '../../rollout/mutations.js'
import { etag, readResponses, Revision, RouteWriteQuery, WriteHeaders, writeResponses } from './schemas.js'
import { answerWrite, commit, validationError } from './write.js'

const RouteParams = Type.Object({ name: Name })

/** A route body: the route without its name, or with the same name as the path. */
const RouteBody = Type.Object({ ...RouteSpec.properties, name: Type.Optional(Name) }, { additionalProperties: false })

/**
 * Routes in the order a request tries them: longest `pathPrefix` first; at equal length a
 * route for an exact host before a `*` one; then declaration order (the data plane's rule,
 * see dataplane/route-index.ts). Routes of different hosts never compete, so this one order
 * is true for every request.
 */
export function inMatchOrder(routes: readonly Route[]): Route[] {
  const key = (r: Route) => ({ length: (r.match?.pathPrefix ?? '/').length, star: (r.match?.host ?? '*') === '*' ? 1 : 0 })
  return routes
    .map((route, index) => ({ route, index, ...key(route) }))
    .sort((a, b) => b.length - a.length || a.star - b.star || a.index - b.index)
    .map((x) => x.route)
}

export const routesPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  const { control } = deps
  const tags = ['routes']

  app.get(
    '/api/routes',
    {
      schema: {
        tags,
        operationId: 'listRoutes',
        summary: 'every route, in the order a request tries them: longest pathPrefix first, then exact host before *, then declaration order',
        response: readResponses({ revision: Revision, routes: Type.Array(RouteSpec) }),
      },
    },
    async (_req, reply) => {
      const state = control.state
      etag(reply, state.revision)
      return { revision: state.revision, routes: inMatchOrder(state.routes) }
    },
  )

  app.get(
    '/api/routes/:name',
    { schema: { tags, operationId: 'getRoute', summary: 'a route', params: RouteParams, response: readResponses({ revision: Revision, ...RouteSpec.properties }) } },
    async (req, reply) => {
      const state = control.state
      const route = state.routes[indexOfRoute(state, req.params.name)]!
      etag(reply, state.revision)
      return { revision: state.revision, ...route }
    },
  )

  app.put(
    '/api/routes/:name',
    {
      schema: {
        tags,
        operationId: 'putRoute',
        summary: 'create or replace a route',
        params: RouteParams,
        headers: WriteHeaders,
        querystring: RouteWriteQuery,
        body: RouteBody,
        response: writeResponses(RouteSpec.properties, true),
      },
    },
    async (req, reply) => {
      const { name } = req.params
      if (req.body.name !== undefined && req.body.name !== name) {
        throw validationError([{ path: 'body.name', message: `must equal the name in the path (${JSON.stringify(name)})` }])
      }
      // Lowercases rule header names, as the config loader does.
      const route = normalizeState({ upstreams: {}, routes: [{ ...req.body, name }] }).routes[0] as Route
      const { revision, result } = await commit(control, req, guarded(name, req.query.force === true, putRoute(route), Date.now()))
      return answerWrite(control, reply, result.created ? 201 : 200, revision, route, req.query.waitApplied)
    },
  )

  app.delete(
    '/api/routes/:name',
    {
      schema: { tags, operationId: 'deleteRoute', summary: 'remove a route', params: RouteParams, headers: WriteHeaders, querystring: RouteWriteQuery, response: writeResponses({ name: Name }) },
    },
    async (req, reply) => {
      const { name } = req.params
      const { revision } = await commit(control, req, guarded(name, req.query.force === true, deleteRoute(name), Date.now()))
      return answerWrite(control, reply, 200, revision, { name }, req.query.waitApplied)
    },
  )

  app.put(
    '/api/routes/:name/split',
    {
      // The canary knob is an operator's day-to-day work.
      config: { role: 'operator' },
      schema: {
        tags,
        operationId: 'putRouteSplit',
        summary: 'replace the whole split of a route (an upstream not named gets weight 0)',
        params: RouteParams,
        headers: WriteHeaders,
        querystring: RouteWriteQuery,
        body: Split,
        response: writeResponses({ route: Name, split: Split }),
      },
    },
    async (req, reply) => {
      const { name } = req.params
      const split = req.body
      const { revision } = await commit(control, req, guarded(name, req.query.force === true, setSplit(name, split), Date.now()))
      return answerWrite(control, reply, 200, revision, { route: name, split }, req.query.waitApplied)
    },
  )
}
