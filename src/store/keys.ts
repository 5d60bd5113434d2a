/**
 * Redis key names of one switchyard fleet, all under one prefix (default `switchyard`).
 *
 * Every name starts with the hash tag `{prefix}`: Redis Cluster hashes only the part in
 * braces, so all keys of a fleet live in one slot and the Lua scripts that touch several
 * of them at once (commit, seed, instances) run on a single node without CROSSSLOT errors.
 * The fleet's data is tiny (one state document, a capped log, a few instance records), so
 * keeping it on one node costs nothing.
 *
 * Layout:
 * - `{p}:state`     the whole state as one JSON document, `revision` included. One key, so a
 *                   reader never sees half a write and `load()` is a single GET.
 * - `{p}:revision`  the same revision as a plain integer. The commit script compares it
 *                   without decoding the state, and a periodic "did I miss a change?" check
 *                   can read it cheaply. Both keys are only ever written together, in one script.
 * - `{p}:events`    the audit log: a list of JSON events, newest first (LPUSH), capped with LTRIM.
 * - `{p}:changes`   the pub/sub channel; each message is the new revision as a decimal string.
 * - `{p}:instance:<id>`  one key per proxy instance (JSON `InstanceInfo`) with a PX TTL.
 * - `{p}:instances` a set of registered ids: the index used to list them.
 * - `{p}:lease:<name>`  who holds the lease `name` (e.g. the rollout driver), with a PX TTL.
 *
 * Why one key per instance with PX rather than a sorted set of expiry scores: Redis itself
 * expires a dead instance, judged by the Redis clock alone (no clock skew between proxy
 * hosts, no reaper needed). The index set exists because listing keys by pattern
 * (KEYS/SCAN) is O(keyspace) and, in Cluster, per node; ids whose key has expired are
 * pruned from the set by the `instances()` script itself.
 */
import { DEFAULTS } from '../config/schema.js'

/** The audit log keeps this many events (`GET /api/events`); older ones are trimmed. */
export const EVENTS_CAP = 1000

export interface StoreKeys {
  readonly prefix: string
  readonly state: string
  readonly revision: string
  readonly events: string
  readonly changes: string
  readonly instances: string
  /** Prefix of the per-instance keys; the id follows it. */
  readonly instancePrefix: string
  instance(id: string): string
  lease(name: string): string
}

/** The key names for `prefix`; the same prefix always gives the same names. */
export function storeKeys(prefix: string = DEFAULTS.redisPrefix): StoreKeys {
  const tag = `{${prefix}}`
  const instancePrefix = `${tag}:instance:`
  return {
    prefix,
    state: `${tag}:state`,
    revision: `${tag}:revision`,
    events: `${tag}:events`,
    changes: `${tag}:changes`,
    instances: `${tag}:instances`,
    instancePrefix,
    instance: (id) => `${instancePrefix}${id}`,
    lease: (name) => `${tag}:lease:${name}`,
  }
}
