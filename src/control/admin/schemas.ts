/**
 * TypeBox schemas of the admin API's envelopes: revisions, write headers, answers, errors.
 * Resource schemas come from `config/schema.ts`, so the API validates exactly what the config
 * file does, and the OpenAPI document (`GET /docs/json`) is generated from the same objects.
 */
import Type, { type TProperties } from 'typebox'
import { Name, TargetId, TargetState, UpstreamSpec } from '../../config/schema.js'

export const Revision = Type.Integer({ minimum: 0, description: 'state revision; +1 per accepted write' })

/** Revisions stay far below 2^53; 15 digits keeps `Number()` exact. */
export const IF_MATCH_PATTERN = '^([0-9]{1,15}|"[0-9]{1,15}")$'

export const WriteHeaders = Type.Object({
  'if-match': Type.Optional(
    Type.String({ pattern: IF_MATCH_PATTERN, description: 'apply only at this revision: `5` or `"5"` (412 otherwise)' }),
  ),
  'x-switchyard-reason': Type.Optional(Type.String({ maxLength: 1024, description: 'recorded in the audit log' })),
})

/** 10 minutes: longer than any sane pipeline step, short enough not to pin a socket forever. */
export const MAX_WAIT_MS = 600_000
const WaitMs = (description: string) => Type.Integer({ minimum: 0, maximum: MAX_WAIT_MS, description })

export const WaitAppliedQuery = Type.Object({
  waitApplied: Type.Optional(WaitMs('answer once every live instance applied the write, or 202 after this many ms')),
})

/** Writes to a route: a rollout in progress on it refuses them (409) unless `force`. */
export const RouteWriteQuery = Type.Object({
  waitApplied: WaitAppliedQuery.properties.waitApplied,
  force: Type.Optional(Type.Boolean({ description: 'abort a rollout in progress on the route (at once, no ramp) and write anyway' })),
})

export const DrainQuery = Type.Object({
  waitMs: Type.Optional(WaitMs('wait until no instance has a request in flight to the target, up to this many ms')),
  waitApplied: WaitAppliedQuery.properties.waitApplied,
})

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String(),
      message: Type.String(),
      details: Type.Optional(Type.Array(Type.Unknown())),
    }),
  },
  { description: 'every error the admin API makes: `{"error":{"code","message","details"}}`' },
)

export const Laggard = Type.Object({
  id: Type.String(),
  host: Type.String(),
  pid: Type.Integer(),
  appliedRevision: Type.Integer(),
})

/** A target inside the state: id and state always filled in. */
export const StoredTarget = Type.Object({ id: TargetId, url: Type.String(), state: TargetState })

/** An upstream as the state holds it (targets normalized). */
export const StoredUpstream = Type.Object({ ...UpstreamSpec.properties, targets: Type.Array(StoredTarget) })

export const UpstreamParams = Type.Object({ name: Name })
export const TargetParams = Type.Object({ name: Name, id: TargetId })

const Errors = { '4xx': ErrorBody, '5xx': ErrorBody }

/**
 * Response schemas of a write answering `{revision, ...props}`: 200 (or 201 with `created`),
 * and 202 when `?waitApplied` ran out with laggards.
 */
export function writeResponses<P extends TProperties>(props: P, created = false) {
  const ok = Type.Object({ revision: Revision, ...props })
  const accepted = Type.Object({
    revision: Revision,
    ...props,
    applied: Type.Literal(false),
    laggards: Type.Array(Laggard),
  })
  return created ? { 200: ok, 201: ok, 202: accepted, ...Errors } : { 200: ok, 202: accepted, ...Errors }
}

/**
 * Sets `ETag: "<revision>"` on a read of the applied state: the value a later write sends as
 * `If-Match`, so read, change, write back is safe against a concurrent writer.
 */
export function etag(reply: { header(name: string, value: string): unknown }, revision: number): void {
  reply.header('etag', `"${revision}"`)
}

/** Response schemas of a read answering `body`. */
export function readResponses<P extends TProperties>(props: P) {
  return { 200: Type.Object(props), ...Errors }
}

export { Errors as ErrorResponses }
