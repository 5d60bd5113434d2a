/**
 * `GET /api/routes/{name}/mirror?window=60s`: a route's mirror, fleet-wide over the last window:
 * the shadow's answers (error rate, p50/p99), copies skipped, answers compared, the mismatch
 * rate and a few sampled differing requests (method, path, status codes, first differing JSON
 * path; never bodies or header values). Figures lag about a second, like `GET /api/stats`.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { MirrorSpec, Name } from '../../config/schema.js'
import { SwitchyardError } from '../../errors.js'
import { TELEMETRY_RETAIN_MS } from '../../telemetry/publisher.js'
import { indexOfRoute } from '../mutations.js'
import type { AdminDeps } from './deps.js'
import { readResponses } from './schemas.js'
import { parseWindow } from './stats.js'

const Nullable = <T extends Type.TSchema>(t: T) => Type.Union([t, Type.Null()])

export const MismatchSample = Type.Object({
  at: Type.Integer({ description: 'epoch ms' }),
  method: Type.String(),
  path: Type.String({ description: 'the request path, without its query' }),
  kind: Type.Union([Type.Literal('status'), Type.Literal('body')], { description: 'status: the status classes differ; body: the JSON documents differ' }),
  status: Type.Integer({ description: "the client's status" }),
  shadowStatus: Type.Integer({ description: "the shadow's status" }),
  jsonPath: Type.Optional(Type.String({ description: 'body: the first place the documents differ, e.g. $.user.name' })),
})

/** The shadow side of a mirror over a window (also shown by a rollout's shadow step). */
export const ShadowFigures = Type.Object({
  route: Type.String(),
  upstream: Type.String({ description: 'the shadow upstream' }),
  requests: Type.Integer({ description: 'copies the shadow answered or failed' }),
  errors: Type.Integer({ description: "5xx answers of the shadow, and copies it gave no answer to (the copy's own 502/503/504)" }),
  errorRate: Nullable(Type.Number()),
  rate: Type.Number({ description: 'copies per second over the window' }),
  p50Ms: Nullable(Type.Number()),
  p99Ms: Nullable(Type.Number()),
  skipped: Type.Object({ body: Type.Integer({ description: 'body above maxBodyBytes' }), busy: Type.Integer({ description: 'maxConcurrent copies in flight' }) }),
  compared: Type.Integer({ description: "shadow answers compared with the client's" }),
  mismatches: Type.Object({ status: Type.Integer(), body: Type.Integer() }),
  mismatchRate: Nullable(Type.Number({ description: '(status + body mismatches) / compared; null when nothing was compared' })),
  samples: Type.Array(MismatchSample, { description: 'the newest differing requests in the window, newest first (at most 10)' }),
})

export const mirrorPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  const { control } = deps
  app.get(
    '/api/routes/:name/mirror',
    {
      schema: {
        tags: ['routes'],
        operationId: 'getRouteMirror',
        summary: "a route's mirror and its shadow side fleet-wide over the last window: error rate, p99, skipped copies, mismatch rate and sampled differing requests",
        params: Type.Object({ name: Name }),
        querystring: Type.Object({
          window: Type.Optional(Type.String({ description: 'how far back: 500ms, 10s, 5m or a number of ms; from 1s to 5m; default 60s' })),
          upstream: Type.Optional(Name),
        }),
        response: readResponses({
          mirror: Nullable(MirrorSpec),
          windowMs: Type.Integer(),
          figures: ShadowFigures,
        }),
      },
    },
    async (req) => {
      const state = control.state
      const route = state.routes[indexOfRoute(state, req.params.name)]!
      const text = req.query.window ?? '60s'
      const windowMs = parseWindow(text)
      if (windowMs === null || windowMs < 1000 || windowMs > TELEMETRY_RETAIN_MS) {
        throw new SwitchyardError('VALIDATION_FAILED', `window must be a duration from 1s to 5m (500ms, 10s, 5m or ms), not ${JSON.stringify(text)}`, {
          details: [{ path: 'querystring.window', message: 'a duration from 1s to 5m' }],
        })
      }
      // A mirror removed (a rollout's shadow step ended) can still be looked at by naming its upstream.
      const upstream = req.query.upstream ?? route.mirror?.upstream
      if (upstream === undefined) throw new SwitchyardError('NOT_FOUND', `route ${JSON.stringify(route.name)} has no mirror (name one with ?upstream= to see past figures)`)
      return { mirror: route.mirror ?? null, windowMs, figures: await control.telemetry.shadow(route.name, upstream, windowMs) }
    },
  )
}
