/**
 * Rollouts: `POST /api/rollouts` starts one, `GET /api/rollouts[/{id}]` reads them (the
 * answering instance's applied state, like every read), `POST /api/rollouts/{id}/pause|resume|
 * promote|abort` controls one. Starting and controlling are ordinary revisioned, audited
 * writes; the moves in between are the driver's (whichever instance holds the lease).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { Name } from '../../config/schema.js'
import type { Control } from '../../rollout/machine.js'
import { controlRollout, rolloutOf, rolloutsOf, startRollout } from '../../rollout/mutations.js'
import { redact } from '../../rollout/plan.js'
import { Rollout, RolloutSpec } from '../../rollout/schema.js'
import type { AdminDeps } from './deps.js'
import { etag, readResponses, Revision, WaitAppliedQuery, WriteHeaders, writeResponses } from './schemas.js'
import { answerWrite, commit } from './write.js'

const IdParams = Type.Object({ id: Name })
const ACTIONS: Record<Control, string> = {
  pause: 'hold the current weight (analysis goes on; a failure still rolls back)',
  resume: 'continue a paused rollout (a step without a pause moves on to the next step)',
  promote: 'end the rollout now at 100 % `to`',
  abort: 'end the rollout and send 100 % of the route back to `from` (gradually with `abort.rampMs`)',
}

export const rolloutsPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  const { control } = deps
  const tags = ['rollouts']

  app.get(
    '/api/rollouts',
    {
      schema: {
        tags,
        operationId: 'listRollouts',
        summary: 'every rollout, newest first (finished ones too, the last 50)',
        response: readResponses({ revision: Revision, rollouts: Type.Array(Rollout) }),
      },
    },
    async (_req, reply) => {
      const state = control.state
      etag(reply, state.revision)
      const rollouts = Object.values(rolloutsOf(state))
        .sort((a, b) => b.createdAt - a.createdAt)
        .map(redact)
      return { revision: state.revision, rollouts }
    },
  )

  app.get(
    '/api/rollouts/:id',
    {
      schema: {
        tags,
        operationId: 'getRollout',
        summary: 'phase, step, weight, last analysis and history of a rollout, and which instance drives the fleet\'s rollouts',
        params: IdParams,
        response: readResponses({
          revision: Revision,
          ...Rollout.properties,
          driver: Type.Union([Type.String(), Type.Null()], { description: 'id of the instance that holds the rollout lease now (see GET /api/instances); null when none does or the store cannot tell' }),
        }),
      },
    },
    async (req, reply) => {
      const state = control.state
      const r = redact(rolloutOf(state, req.params.id))
      const driver = await control.store.leaseHolder('rollouts').catch(() => null)
      etag(reply, state.revision)
      return { revision: state.revision, ...r, driver }
    },
  )

  app.post(
    '/api/rollouts',
    {
      config: { role: 'operator' },
      schema: {
        tags,
        operationId: 'startRollout',
        summary: 'start a rollout of a route from one upstream to another',
        headers: WriteHeaders,
        querystring: WaitAppliedQuery,
        body: RolloutSpec,
        response: writeResponses(Rollout.properties, true),
      },
    },
    async (req, reply) => {
      const { revision, result } = await commit(control, req, startRollout(req.body, Date.now()))
      deps.notifier?.notify(result, 'started', result.message)
      return answerWrite(control, reply, 201, revision, redact(result), req.query.waitApplied)
    },
  )

  for (const action of Object.keys(ACTIONS) as Control[]) {
    app.post(
      `/api/rollouts/:id/${action}`,
      {
        config: { role: 'operator' },
        schema: {
          tags,
          operationId: `${action}Rollout`,
          summary: ACTIONS[action],
          params: IdParams,
          headers: WriteHeaders,
          querystring: WaitAppliedQuery,
          response: writeResponses(Rollout.properties),
        },
      },
      async (req, reply) => {
        const { revision, result } = await commit(control, req, controlRollout(req.params.id, action, Date.now()))
        for (const e of result.events) deps.notifier?.notify(result.rollout, e.event, e.message)
        return answerWrite(control, reply, 200, revision, redact(result.rollout), req.query.waitApplied)
      },
    )
  }
}
