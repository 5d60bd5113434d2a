/**
 * `GET /api/stats?window=60s`: the fleet's traffic over the last window, per route/upstream
 * pair and per upstream: request rate, error rate (5xx, the proxy's own 502/503/504 included)
 * and p50/p99 latency, summed over every instance that reported in the window (workers
 * included). Figures lag about a second: each instance publishes once a second.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { SwitchyardError } from '../../errors.js'
import { TELEMETRY_RETAIN_MS } from '../../telemetry/publisher.js'
import type { AdminDeps } from './deps.js'
import { readResponses } from './schemas.js'

const Figures = Type.Object({
  route: Type.Union([Type.String(), Type.Null()], { description: 'null in `upstreams`: all routes together' }),
  upstream: Type.String(),
  requests: Type.Integer(),
  errors: Type.Integer({ description: '5xx answers, the proxy\'s own 502/503/504 included' }),
  errorRate: Type.Union([Type.Number(), Type.Null()], { description: 'errors / requests; null without requests' }),
  rate: Type.Number({ description: 'requests per second over the window' }),
  p50Ms: Type.Union([Type.Number(), Type.Null()]),
  p99Ms: Type.Union([Type.Number(), Type.Null()]),
})

/** `500ms`, `10s`, `5m` or a number of ms → ms; null when malformed. */
export function parseWindow(text: string): number | null {
  const m = /^([0-9]{1,9})(ms|s|m)?$/.exec(text)
  if (m === null) return null
  const n = Number(m[1])
  return m[2] === 'm' ? n * 60_000 : m[2] === 's' ? n * 1000 : n
}

export const statsPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  app.get(
    '/api/stats',
    {
      schema: {
        tags: ['stats'],
        operationId: 'getStats',
        summary: 'the fleet\'s request rate, error rate and p50/p99 per route/upstream and per upstream over the last window',
        querystring: Type.Object({
          window: Type.Optional(Type.String({ description: 'how far back: 500ms, 10s, 5m or a number of ms; from 1s to 5m; default 60s' })),
        }),
        response: readResponses({
          windowMs: Type.Integer(),
          at: Type.Integer({ description: 'epoch ms: the window is the windowMs before it' }),
          instances: Type.Array(Type.String(), { description: 'instances that reported within the window' }),
          routes: Type.Array(Figures),
          upstreams: Type.Array(Figures),
        }),
      },
    },
    async (req) => {
      const text = req.query.window ?? '60s'
      const windowMs = parseWindow(text)
      if (windowMs === null || windowMs < 1000 || windowMs > TELEMETRY_RETAIN_MS) {
        throw new SwitchyardError('VALIDATION_FAILED', `window must be a duration from 1s to 5m (500ms, 10s, 5m or ms), not ${JSON.stringify(text)}`, {
          details: [{ path: 'querystring.window', message: 'a duration from 1s to 5m' }],
        })
      }
      return deps.control.telemetry.window(windowMs)
    },
  )
}
