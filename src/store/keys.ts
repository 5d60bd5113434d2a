/**
 * Redis key names of one switchyard fleet, all under one prefix (default `switchyard`).
 *
 * Every name starts with the hash tag `{prefix}`: Redis Cluster hashes only the part in
 * braces, so all keys of a fleet live in one slot and the Lua scripts that touch several
 * of them at once (commit, seed, instances) run on a single node without CROSSSLOT errors.
 * A fleet's data is small (a few MB at 10,000 routes), so keeping it on one node costs nothing.
 *
 * Layout: the state is kept per resource, so a write stores and announces only what it
 * changed, and a follower fetches only that (`changesSince`):
 * - `{p}:revision`  the state's revision, a plain integer: the commit script's compare-and-set
 *                   reads it, and a periodic "did I miss a change?" check reads it alone.
 * - `{p}:upstreams`, `{p}:routes`, `{p}:flags`, `{p}:rollouts`  hashes, name → the resource's JSON.
 * - `{p}:route-order`  the JSON array of route names in match (declaration) order; rewritten
 *                   only when routes are added, removed or reordered, not when one changes.
 * - `{p}:changelog` what each of the last CHANGELOG_CAP revisions changed, newest first:
 *                   `<revision> <Touched JSON>`, or `<revision> *` for a whole-state write
 *                   (seed, commit without touched names, conversion from the old layout).
 * - `{p}:state`     the old layout's whole-state document. Never written any more: when found
 *                   (a store written by an older version) it is converted to the keys above,
 *                   keeping its revision, and deleted.
 * Every state key is written only by the scripts in redis-scripts.ts, so a reader (one
 * script too) never sees half a write.
 * - `{p}:events`    the audit log: a list of JSON events, newest first (LPUSH), capped with LTRIM.
 * - `{p}:changes`   the pub/sub channel; each message is `<revision> <Touched JSON>` (or
 *                   `<revision> *`), as in the change log: the new revision comes first.
 * - `{p}:instance:<id>`  one key per proxy instance (JSON `InstanceInfo`) with a PX TTL.
 * - `{p}:instances` a set of registered ids: the index used to list them.
 * - `{p}:lease:<name>`  who holds the lease `name` (e.g. the rollout driver), with a PX TTL.
 * - `{p}:telemetry:<id>`  one sorted set per instance of its per-period traffic figures
 *                   (JSON `TelemetrySample`, scored by `at`), trimmed to the retention on each
 *                   push and expiring with it; `{p}:telemetry-instances` is its index set.
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

/**
 * The change log keeps what this many revisions changed: a follower further behind (or
 * behind a whole-state write) reads the state whole. An entry is its touched names only.
 */
export const CHANGELOG_CAP = 1000

export interface StoreKeys {
  readonly prefix: string
  /** the old layout's whole-state document, read only to convert it */
  readonly legacyState: string
  readonly revision: string
  /** the digest of the state at `revision` (state/digest.ts) */
  readonly digest: string
  readonly upstreams: string
  readonly routes: string
  readonly flags: string
  readonly rollouts: string
  readonly routeOrder: string
  readonly changelog: string
  readonly events: string
  readonly changes: string
  readonly instances: string
  /** Prefix of the per-instance keys; the id follows it. */
  readonly instancePrefix: string
  instance(id: string): string
  lease(name: string): string
  readonly telemetryInstances: string
  telemetry(id: string): string
}

/** The key names for `prefix`; the same prefix always gives the same names. */
export function storeKeys(prefix: string = DEFAULTS.redisPrefix): StoreKeys {
  const tag = `{${prefix}}`
  const instancePrefix = `${tag}:instance:`
  return {
    prefix,
    legacyState: `${tag}:state`,
    revision: `${tag}:revision`,
    digest: `${tag}:digest`,
    upstreams: `${tag}:upstreams`,
    routes: `${tag}:routes`,
    flags: `${tag}:flags`,
    rollouts: `${tag}:rollouts`,
    routeOrder: `${tag}:route-order`,
    changelog: `${tag}:changelog`,
    events: `${tag}:events`,
    changes: `${tag}:changes`,
    instances: `${tag}:instances`,
    instancePrefix,
    instance: (id) => `${instancePrefix}${id}`,
    lease: (name) => `${tag}:lease:${name}`,
    telemetryInstances: `${tag}:telemetry-instances`,
    telemetry: (id) => `${tag}:telemetry:${id}`,
  }
}
