/**
 * The state in Redis read and written with raw commands, behind the instances' back: for
 * tests that fake a write nobody announced, or a state no writer would accept. The writes
 * follow the store's layout (src/store/keys.ts) exactly, as a whole-state write does.
 */
import type { Redis } from 'ioredis'
import type { State } from '../../src/config/schema.js'
import { storeKeys } from '../../src/store/keys.js'

/** The stored state, read the way the store reads it (per resource, routes in the stored order). */
export async function readState(raw: Redis, prefix: string): Promise<State | null> {
  const keys = storeKeys(prefix)
  const [revision, order, upstreams, routes, flags, rollouts] = await Promise.all([
    raw.get(keys.revision),
    raw.get(keys.routeOrder),
    raw.hgetall(keys.upstreams),
    raw.hgetall(keys.routes),
    raw.hgetall(keys.flags),
    raw.hgetall(keys.rollouts),
  ])
  if (revision === null) return null
  const parse = (record: Record<string, string>) => Object.fromEntries(Object.entries(record).map(([k, v]) => [k, JSON.parse(v)]))
  return {
    revision: Number(revision),
    upstreams: parse(upstreams),
    routes: (JSON.parse(order ?? '[]') as string[]).map((name) => JSON.parse(routes[name]!)),
    flags: parse(flags),
    rollouts: parse(rollouts),
  }
}

/**
 * Replaces the stored state with `state` as one transaction, logged as a whole-state write
 * (so followers read it whole); announced on the changes channel only when `publish`.
 */
export async function writeState(raw: Redis, prefix: string, state: State, { publish }: { publish: boolean }): Promise<void> {
  const keys = storeKeys(prefix)
  const hash = (record: Record<string, unknown>) => Object.entries(record).flatMap(([k, v]) => [k, JSON.stringify(v)])
  const tx = raw.multi().del(keys.upstreams, keys.routes, keys.flags, keys.rollouts)
  for (const [key, fields] of [
    [keys.upstreams, hash(state.upstreams)],
    [keys.routes, state.routes.flatMap((r) => [r.name, JSON.stringify(r)])],
    [keys.flags, hash(state.flags)],
    [keys.rollouts, hash(state.rollouts)],
  ] as const) {
    if (fields.length > 0) tx.hset(key, ...fields)
  }
  tx.set(keys.routeOrder, JSON.stringify(state.routes.map((r) => r.name)))
  tx.set(keys.revision, String(state.revision))
  tx.lpush(keys.changelog, `${state.revision} *`)
  if (publish) tx.publish(keys.changes, `${state.revision} *`)
  await tx.exec()
}
