/**
 * Rolling replacement of an upstream's targets: `POST /api/upstreams/{name}/replace` starts one
 * (202 with its record), `GET` reads the running or last one. The work is src/control/replace.ts.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { Name, TargetId } from '../../config/schema.js'
import { SwitchyardError } from '../../errors.js'
import { upstreamOf } from '../mutations.js'
import { REPLACE_DEFAULTS, Replacer } from '../replace.js'
import type { AdminDeps } from './deps.js'
import { ErrorResponses, etag, Revision, UpstreamParams, WriteHeaders } from './schemas.js'
import { normalizeUpstream } from './upstreams.js'
import { parseIfMatch } from './write.js'

const Ms = (description: string, minimum: number) => Type.Optional(Type.Integer({ minimum, maximum: 86_400_000, description }))

const ReplaceBody = Type.Object(
  {
    targets: Type.Array(
      Type.Object({ url: Type.String({ minLength: 1, maxLength: 2048, description: 'http(s)://host:port of the instance' }), id: Type.Optional(TargetId) }, { additionalProperties: false }),
      { minItems: 1, maxItems: 1000, description: 'the targets the upstream has at the end; one in both the old and new list (same id) is kept as it is' },
    ),
    maxSurge: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000, description: `new targets added beyond the old count at a time (default ${REPLACE_DEFAULTS.maxSurge})` })),
    maxUnavailable: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 1000, description: `how many fewer targets than wanted may serve during the replacement (default ${REPLACE_DEFAULTS.maxUnavailable})` }),
    ),
    healthyTimeoutMs: Ms(`how long a new target has to become healthy before the replacement fails (default ${REPLACE_DEFAULTS.healthyTimeoutMs})`, 1),
    drainWaitMs: Ms(`how long an old target may drain before it is removed anyway (default ${REPLACE_DEFAULTS.drainWaitMs})`, 0),
  },
  { additionalProperties: false },
)

const ReplacementView = Type.Object({
  id: Type.String({ description: 'names the replacement in the audit log: reasons read `replace <id>: ...`' }),
  upstream: Name,
  phase: Type.Union([Type.Literal('running'), Type.Literal('succeeded'), Type.Literal('failed')]),
  step: Type.String({ description: 'what it does now, or did last: "add 10.0.0.5:80 (1/6)", "wait for 10.0.0.5:80 to be healthy (1/6)"' }),
  done: Type.Integer({ minimum: 0, description: 'steps done: each added (and healthy) or removed target is one' }),
  total: Type.Integer({ minimum: 0 }),
  message: Type.String({ description: 'why it failed, or how it ended; empty while running' }),
  targets: Type.Array(Type.Object({ id: TargetId, url: Type.String() })),
  maxSurge: Type.Integer(),
  maxUnavailable: Type.Integer(),
  healthyTimeoutMs: Type.Integer(),
  drainWaitMs: Type.Integer(),
  actor: Type.String(),
  startedAt: Type.String({ format: 'date-time' }),
  endedAt: Type.Optional(Type.String({ format: 'date-time' })),
})

export const replacePlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  const { control, dataplane } = deps
  const replacer = new Replacer(control, (upstream, id) => dataplane.resources.targets.get(`${upstream}/${id}`)?.health())
  app.addHook('onClose', () => replacer.stop())
  const tags = ['targets']

  app.post(
    '/api/upstreams/:name/replace',
    {
      // Health-gated and bounded by maxSurge/maxUnavailable: the controlled way an operator swaps targets.
      config: { role: 'operator' },
      schema: {
        tags,
        operationId: 'replaceTargets',
        summary: 'rolling replacement: add new targets (up to maxSurge), wait until healthy, drain and remove old ones, until the upstream has exactly the new targets; 202 with its record',
        params: UpstreamParams,
        headers: WriteHeaders,
        querystring: Type.Object({
          waitApplied: Type.Optional(Type.Integer({ minimum: 0, description: 'refused (400): a replacement is many writes over minutes; follow it with GET on this path' })),
        }),
        body: ReplaceBody,
        response: { 202: Type.Object({ revision: Revision, ...ReplacementView.properties }), ...ErrorResponses },
      },
    },
    async (req, reply) => {
      const { name } = req.params
      if (req.query.waitApplied !== undefined) {
        throw new SwitchyardError('VALIDATION_FAILED', 'waitApplied: a replacement is many writes over minutes, not one: follow it with GET /api/upstreams/{name}/replace (or ctl target replace --wait)')
      }
      // If-Match: start only if nothing changed since the caller looked (its steps write later).
      const ifMatch = parseIfMatch(req.headers['if-match'])
      if (ifMatch !== undefined) await control.writer.expectRevision(ifMatch)
      const stored = upstreamOf(control.state, name) // 404 for an unknown upstream
      if (stored.discovery !== undefined) {
        throw new SwitchyardError('CONFLICT', `upstream ${JSON.stringify(name)} takes its targets from DNS discovery: replace them in DNS`)
      }
      // Fills in the default ids (host:port) and checks the urls, as adding a target does.
      const targets = normalizeUpstream(name, { targets: req.body.targets }).targets
      const header = req.headers['x-switchyard-reason']
      const record = await replacer.start(name, {
        targets,
        maxSurge: req.body.maxSurge ?? REPLACE_DEFAULTS.maxSurge,
        maxUnavailable: req.body.maxUnavailable ?? REPLACE_DEFAULTS.maxUnavailable,
        healthyTimeoutMs: req.body.healthyTimeoutMs ?? REPLACE_DEFAULTS.healthyTimeoutMs,
        drainWaitMs: req.body.drainWaitMs ?? REPLACE_DEFAULTS.drainWaitMs,
        actor: req.actor,
        reason: typeof header === 'string' && header !== '' ? header : undefined,
      })
      const revision = control.state.revision
      etag(reply, revision)
      return reply.code(202).send({ revision, ...record })
    },
  )

  app.get(
    '/api/upstreams/:name/replace',
    {
      schema: {
        tags,
        operationId: 'getReplacement',
        summary: "the upstream's running or last rolling replacement (the newest any live instance drives or drove)",
        params: UpstreamParams,
        response: { 200: Type.Object({ revision: Revision, ...ReplacementView.properties }), ...ErrorResponses },
      },
    },
    async (req, reply) => {
      const { name } = req.params
      upstreamOf(control.state, name)
      const record = await replacer.get(name)
      if (record === undefined) throw new SwitchyardError('NOT_FOUND', `no replacement of upstream ${JSON.stringify(name)} is known to a live instance`)
      const revision = control.state.revision
      etag(reply, revision)
      return { revision, ...record }
    },
  )
}
