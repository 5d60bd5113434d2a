/**
 * Targets of an upstream: add, read (with fleet-wide in-flight), change state, drain, remove.
 * Drain and remove wait on the instance registry, so "drained" means no proxy of the fleet
 * still has a request in flight to the target.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { Name, TargetSpec, TargetState, type Target } from '../../config/schema.js'
import { SwitchyardError } from '../../errors.js'
import type { ControlPlane } from '../control-plane.js'
import { addTarget, removeTarget, setTargetState, targetOf, upstreamOf } from '../mutations.js'
import { isProvided } from '../providers/provider.js'
import type { AdminDeps } from './deps.js'
import { DrainQuery, etag, Laggard, readResponses, Revision, StoredTarget, TargetParams, UpstreamParams, WaitAppliedQuery, WriteHeaders, writeResponses } from './schemas.js'
import { normalizeUpstream } from './upstreams.js'
import { answerWrite, commit } from './write.js'
const TargetView = { upstream: Name, ...StoredTarget.properties }
const DrainView = {
  ...TargetView,
  drained: Type.Optional(Type.Boolean()),
  inflight: Type.Optional(Type.Integer({ minimum: 0, description: 'requests still in flight, fleet-wide' })),
}
const headers = WriteHeaders

/** A target as `GET` shows it (alone or in its upstream's list). */
const TargetRead = {
  ...StoredTarget.properties,
  source: Type.Optional(Type.Literal('dns', { description: 'set on targets found by DNS discovery' })),
  healthy: Type.Boolean({ description: 'gets new requests as far as health goes: passes its checks and is not ejected' }),
  reason: Type.Optional(
    Type.String({ description: 'why it is not healthy: "ejected: 5 consecutive 5xx", "health check failing", "connect failed", ...' }),
  ),
  until: Type.Optional(Type.String({ format: 'date-time', description: 'when it comes back by itself (an ejection, a passive failure)' })),
  inflight: Type.Integer({ minimum: 0, description: 'requests in flight to it, summed over every instance' }),
}

/**
 * A target that only DNS discovery holds is not in the store, so no write can change it: 409
 * rather than a 404 that would deny what `GET` shows. (Adding a static target with its id takes
 * it over: static targets win.)
 */
function refuseDiscovered(control: ControlPlane, upstream: string, id: string): void {
  if (control.state.upstreams[upstream]?.targets.some((t) => t.id === id)) return
  const found = control.follower.effective.upstreams[upstream]?.targets.find((t) => t.id === id)
  if (found === undefined || !isProvided(found)) return
  throw new SwitchyardError(
    'CONFLICT',
    `target ${JSON.stringify(id)} of upstream ${JSON.stringify(upstream)} is managed by DNS discovery: it follows the DNS answers and cannot be changed through the API`,
  )
}
/** A drain answers 202 either because it ran out of waitMs (`drained: false`) or of waitApplied. */
const drainResponses = {
  ...writeResponses(DrainView),
  202: Type.Object({
    revision: Revision,
    ...DrainView,
    applied: Type.Optional(Type.Literal(false)),
    laggards: Type.Optional(Type.Array(Laggard)),
  }),
}

export const targetsPlugin: FastifyPluginAsyncTypebox<{ deps: AdminDeps }> = async (app, { deps }) => {
  const { control, dataplane } = deps
  const tags = ['targets']

  app.post(
    '/api/upstreams/:name/targets',
    { schema: { tags, operationId: 'addTarget', summary: 'add a target', params: UpstreamParams, headers, querystring: WaitAppliedQuery, body: TargetSpec, response: writeResponses(TargetView, true) } },
    async (req, reply) => {
      const { name } = req.params
      // Checks the url and fills in the default id (host:port) and state (active).
      const [target] = normalizeUpstream(name, { targets: [req.body] }).targets
      if (target === undefined) throw new Error('normalizeUpstream lost a target')
      const { revision } = await commit(control, req, addTarget(name, target))
      return answerWrite(control, reply, 201, revision, { upstream: name, ...target }, req.query.waitApplied)
    },
  )

  /** A target as reads show it: its state, this instance's view of its health, the fleet's in-flight count. */
  const targetView = (name: string, target: Target & { source?: 'dns' }, inflight: number) => {
    // Health is this instance's view (its own active and passive checks, its own ejections).
    const rt = dataplane.resources.targets.get(`${name}/${target.id}`)
    const { healthy, reason, until } = rt?.health() ?? { healthy: false, reason: 'not applied on this instance yet' }
    const when = until === undefined ? {} : { until: new Date(until).toISOString() }
    return { ...target, healthy, ...(reason === undefined ? {} : { reason }), ...when, inflight }
  }

  app.get(
    '/api/upstreams/:name/targets',
    {
      schema: {
        tags,
        operationId: 'listTargets',
        summary: "an upstream's targets (discovered ones included), each with its health and in-flight requests summed over every instance",
        params: UpstreamParams,
        response: readResponses({ revision: Revision, upstream: Name, targets: Type.Array(Type.Object(TargetRead)) }),
      },
    },
    async (req, reply) => {
      const { name } = req.params
      const state = control.state
      const stored = upstreamOf(state, name) // 404 for an unknown upstream
      // The effective state: the store's targets and discovered ones (with `source: "dns"`).
      const targets = control.follower.effective.upstreams[name]?.targets ?? stored.targets
      const inflight = await control.fleet.inflightByTarget()
      etag(reply, state.revision)
      return { revision: state.revision, upstream: name, targets: targets.map((t) => targetView(name, t, inflight.get(`${name}/${t.id}`) ?? 0)) }
    },
  )

  app.get(
    '/api/upstreams/:name/targets/:id',
    {
      schema: {
        tags,
        operationId: 'getTarget',
        summary: 'a target with its health and in-flight requests summed over every instance',
        params: TargetParams,
        response: readResponses({ revision: Revision, upstream: Name, ...TargetRead }),
      },
    },
    async (req, reply) => {
      const { name, id } = req.params
      const state = control.state
      // The effective state: the store's targets and discovered ones (with `source: "dns"`).
      const target = targetOf(control.follower.effective, name, id)
      const { inflight } = await control.fleet.targetInflight(`${name}/${id}`)
      etag(reply, state.revision)
      return { revision: state.revision, upstream: name, ...targetView(name, target, inflight) }
    },
  )

  app.patch(
    '/api/upstreams/:name/targets/:id',
    {
      config: { role: 'operator' },
      schema: {
        tags,
        operationId: 'patchTarget',
        summary: 'set a target state: active, draining or disabled',
        params: TargetParams,
        headers,
        querystring: WaitAppliedQuery,
        body: Type.Object({ state: TargetState }, { additionalProperties: false }),
        response: writeResponses(TargetView),
      },
    },
    async (req, reply) => {
      const { name, id } = req.params
      refuseDiscovered(control, name, id)
      const { revision, result } = await commit(control, req, setTargetState(name, id, req.body.state, 'target.patch'))
      return answerWrite(control, reply, 200, revision, { upstream: name, ...result }, req.query.waitApplied)
    },
  )

  app.post(
    '/api/upstreams/:name/targets/:id/drain',
    {
      config: { role: 'operator' },
      schema: {
        tags,
        operationId: 'drainTarget',
        summary: 'stop new requests to a target; with waitMs, answer 200 once drained fleet-wide or 202 at the deadline',
        params: TargetParams,
        headers,
        querystring: DrainQuery,
        response: drainResponses,
      },
    },
    async (req, reply) => {
      const { name, id } = req.params
      const { waitMs, waitApplied } = req.query
      refuseDiscovered(control, name, id)
      const { revision, result } = await commit(control, req, setTargetState(name, id, 'draining', 'target.drain'))
      if (waitMs === undefined) return answerWrite(control, reply, 200, revision, { upstream: name, ...result }, waitApplied)
      const { drained, inflight } = await control.fleet.waitDrained(`${name}/${id}`, revision, waitMs)
      if (!drained) {
        reply.header('etag', `"${revision}"`)
        return reply.code(202).send({ revision, upstream: name, ...result, drained, inflight })
      }
      return answerWrite(control, reply, 200, revision, { upstream: name, ...result, drained, inflight }, waitApplied)
    },
  )

  // No role declared, so admin: removing (like adding) a target changes what the upstream is;
  // an operator drains it or disables it instead, and swaps targets with a replacement.
  app.delete(
    '/api/upstreams/:name/targets/:id',
    {
      schema: {
        tags,
        operationId: 'deleteTarget',
        summary: 'remove a target; with waitMs, drain it first (two writes: target.drain, target.remove)',
        params: TargetParams,
        headers,
        querystring: DrainQuery,
        response: drainResponses,
      },
    },
    async (req, reply) => {
      const { name, id } = req.params
      const { waitMs, waitApplied } = req.query
      refuseDiscovered(control, name, id)
      let outcome: { drained: boolean; inflight: number } | undefined
      let ifMatch = true
      if (waitMs !== undefined) {
        let revision = control.state.revision
        if (targetOf(control.state, name, id).state === 'active') {
          revision = (await commit(control, req, setTargetState(name, id, 'draining', 'target.drain'))).revision
          // If-Match guarded the drain; the removal follows it whatever else was written meanwhile.
          ifMatch = false
        }
        outcome = await control.fleet.waitDrained(`${name}/${id}`, revision, waitMs)
      }
      const { revision, result } = await commit(control, req, removeTarget(name, id), { ifMatch })
      return answerWrite(control, reply, 200, revision, { upstream: name, ...result, ...outcome }, waitApplied)
    },
  )
}
