/**
 * `GET /api/state`: this instance's applied state, not a read-through to the store (comparing two
 * instances shows propagation). `PUT /api/state`: a declared state (a pipeline's file) applied as
 * one write, or with `?dryRun=true` only compared (see control/state-apply.ts).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { checkDeclaredState } from '../../config/load.js'
import { FlagSpec, Name, RouteSpec, UpstreamSpec } from '../../config/schema.js'
import type { StateSpec } from '../../config/validate.js'
import { rolloutsOf } from '../../rollout/mutations.js'
import { redact } from '../../rollout/plan.js'
import { Rollout } from '../../rollout/schema.js'
import { applyState, NoChange } from '../state-apply.js'
import type { AdminDeps } from './deps.js'
import { etag, readResponses, Revision, StoredUpstream, WriteHeaders, writeResponses } from './schemas.js'
import { strictValidatorCompiler } from './validator.js'
import { answerWrite, commit, parseIfMatch, validationError } from './write.js'

export const StateBody = {
  revision: Revision,
  upstreams: Type.Record(Name, StoredUpstream),
  routes: Type.Array(RouteSpec),
  flags: Type.Record(Name, FlagSpec),
  rollouts: Type.Record(Name, Rollout, { description: 'rollouts by id (webhook URLs shown as scheme://host/***, secrets as ***)' }),
}

/** The state part of a config file. Documents the body; the handler checks it as the config loader does. */
const DeclaredState = Type.Object(
  {
    upstreams: Type.Record(Name, UpstreamSpec),
    routes: Type.Array(RouteSpec, { maxItems: 10_000 }),
    flags: Type.Optional(Type.Record(Name, FlagSpec, { description: 'left out: the live flags are kept' })),
  },
  { additionalProperties: false },
)

const ApplyQuery = Type.Object({
  waitApplied: Type.Optional(Type.Integer({ minimum: 0, maximum: 600_000, description: 'answer once every live instance applied the write, or 202 after this many ms' })),
  force: Type.Optional(Type.Boolean({ description: 'abort (at once, no ramp) the rollouts whose route or upstreams the state changes, and apply' })),
  dryRun: Type.Optional(Type.Boolean({ description: 'only compare: answer the changes (and the rollouts in the way) without writing' })),
})

const Change = Type.Object(
  { kind: Type.String(), op: Type.String(), name: Type.Optional(Type.String()) },
  { additionalProperties: true, description: '{kind: upstream|route|flag, name, op: add (after) | change (fields: [{path, before?, after?}]) | remove (before)}, or {kind: routes, op: order, before, after}' },
)

const Applied = {
  changed: Type.Boolean({ description: 'false: the live state already matched; nothing was written' }),
  changes: Type.Array(Change),
  conflicts: Type.Array(Type.Object({ rollout: Type.String(), phase: Type.String(), route: Type.String(), reason: Type.String() })),
  aborted: Type.Array(Type.String(), { description: 'rollouts aborted by force' }),
  dryRun: Type.Optional(Type.Boolean()),
}

/** A whole declared state at 10,000 routes runs to a few MB; other bodies stay at 1 MiB. */
const STATE_BODY_LIMIT = 32 * 1024 * 1024

export const statePlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  const { control } = deps
  app.get(
    '/api/state',
    { schema: { tags: ['state'], operationId: 'getState', summary: 'the applied state', response: readResponses(StateBody) } },
    async (_req, reply) => {
      // One read of the reference: the answer is one consistent revision even if a write lands meanwhile.
      const state = control.state
      etag(reply, state.revision)
      const rollouts = rolloutsOf(state)
      const ids = Object.keys(rollouts)
      if (!ids.some((id) => (rollouts[id]!.spec.notify?.length ?? 0) > 0)) return { ...state, rollouts }
      return { ...state, rollouts: Object.fromEntries(ids.map((id) => [id, redact(rollouts[id]!)])) }
    },
  )

  app.put(
    '/api/state',
    {
      bodyLimit: STATE_BODY_LIMIT,
      // The body is checked in the handler like a config file (shape and meaning in one pass,
      // paths as in the file); the schema above documents it.
      validatorCompiler: (req) => (req.httpPart === 'body' ? (value: unknown) => ({ value }) : strictValidatorCompiler(req)),
      schema: {
        tags: ['state'],
        operationId: 'putState',
        summary: 'apply a declared state {upstreams, routes, flags} as one write (rollouts are kept); ?dryRun=true only compares',
        headers: WriteHeaders,
        querystring: ApplyQuery,
        body: DeclaredState,
        response: writeResponses(Applied),
      },
    },
    async (req, reply) => {
      const problems = checkDeclaredState(req.body)
      if (problems.length > 0) throw validationError(problems)
      const { force = false, dryRun = false, waitApplied } = req.query
      if (dryRun && waitApplied !== undefined) throw validationError([{ path: 'querystring.waitApplied', message: 'a dry run writes nothing to wait for' }])
      const mutation = applyState(req.body as StateSpec, { force, dryRun, now: Date.now() })
      try {
        if (dryRun) {
          const { revision, change } = await control.writer.preview(mutation, { ifMatch: parseIfMatch(req.headers['if-match']) })
          etag(reply, revision)
          return { revision, ...change.result, dryRun: true }
        }
        const { revision, result } = await commit(control, req, mutation)
        return await answerWrite(control, reply, 200, revision, result, waitApplied)
      } catch (err) {
        if (!(err instanceof NoChange)) throw err
        const nothing = { changed: false, changes: [], conflicts: [], aborted: [], ...(dryRun ? { dryRun } : {}) }
        return answerWrite(control, reply, 200, err.revision, nothing, waitApplied)
      }
    },
  )
}
