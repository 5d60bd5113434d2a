/**
 * The one path every admin write takes: If-Match and reason from the headers, the actor from
 * auth, the writer (validate, compare-and-set, audit, apply), then the answer with its ETag and,
 * with `?waitApplied`, the fleet's confirmation. Handlers only pick the mutation (mutations.ts).
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Problem } from '../../errors.js'
import { SwitchyardError, formatProblem } from '../../errors.js'
import type { InstanceInfo } from '../../store/store.js'
import type { ControlPlane } from '../control-plane.js'
import type { Mutation } from '../mutations.js'

/** `5` or `"5"` → 5; absent → undefined. The header schema already refused other forms. */
export function parseIfMatch(value: string | string[] | undefined): number | undefined {
  if (value === undefined) return undefined
  const m = typeof value === 'string' ? /^"?([0-9]{1,15})"?$/.exec(value) : null
  // Reached only if a route forgot the header schema: refuse rather than ignore the precondition.
  if (m === null || m[1] === undefined) throw new SwitchyardError('VALIDATION_FAILED', 'If-Match must be a revision: 5 or "5"')
  return Number(m[1])
}

export function validationError(problems: Problem[]): SwitchyardError {
  return new SwitchyardError('VALIDATION_FAILED', problems.map(formatProblem).join('; '), { details: problems })
}

export interface Committed<T> {
  revision: number
  result: T
}

/** Runs `mutation` as one revisioned write on behalf of the request's actor. */
export async function commit<T>(
  control: ControlPlane,
  req: FastifyRequest,
  mutation: Mutation<T>,
  opts: { ifMatch?: boolean } = {},
): Promise<Committed<T>> {
  const header = req.headers['x-switchyard-reason']
  const reason = typeof header === 'string' && header !== '' ? header : undefined
  const ifMatch = opts.ifMatch === false ? undefined : parseIfMatch(req.headers['if-match'])
  const { revision, change } = await control.writer.write(mutation, { ifMatch, actor: req.actor, reason })
  return { revision, result: change.result }
}

/**
 * Live instances still below `revision` after waiting up to `ms`. The write is already
 * committed: if the registry cannot be read, the answer must not be a 5xx that invites a
 * retry, so it is reported as unconfirmed (202 without laggards).
 */
export async function laggardsAfter(control: ControlPlane, revision: number, ms: number): Promise<InstanceInfo[] | null> {
  try {
    return await control.fleet.waitApplied(revision, ms)
  } catch {
    return null
  }
}

/**
 * Sends a write's answer: `{revision, ...body}` with `ETag: "<revision>"`, status `status`
 * (200/201), or 202 `{..., applied: false, laggards}` when `?waitApplied` ran out.
 */
export async function answerWrite(
  control: ControlPlane,
  reply: FastifyReply,
  status: number,
  revision: number,
  body: object,
  waitApplied: number | undefined,
): Promise<FastifyReply> {
  reply.header('etag', `"${revision}"`)
  if (waitApplied !== undefined) {
    const laggards = await laggardsAfter(control, revision, waitApplied)
    if (laggards === null || laggards.length > 0) {
      const list = (laggards ?? []).map(({ id, host, pid, appliedRevision }) => ({ id, host, pid, appliedRevision }))
      return reply.code(202).send({ revision, ...body, applied: false, laggards: list })
    }
  }
  return reply.code(status).send({ revision, ...body })
}
