/**
 * The Redis store's Lua scripts (redis.ts). Every multi-key write is one script, so it is
 * atomic and revision-checked on the server; every key a script touches shares the fleet's
 * hash tag (see keys.ts), so the scripts also run on Redis Cluster.
 */
import { createHash } from 'node:crypto'
import type { RedisClient } from './redis-connection.js'

/**
 * A Lua script run with EVALSHA, falling back to EVAL when the server does not know it
 * yet (after a restart or on another Cluster node); EVAL caches it for the next call.
 */
class LuaScript {
  readonly sha: string
  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex')
  }

  async run(client: RedisClient, keys: string[], args: Array<string | number>): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args)
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err
      return await client.eval(this.source, keys.length, ...keys, ...args)
    }
  }
}

/**
 * KEYS: state, revision, events. ARGV: expected, next revision, state JSON, event JSON,
 * events cap, channel. Returns {1, rev} written, {0, current} mismatch, {-1} empty.
 */
export const COMMIT = new LuaScript(`
local current = redis.call('GET', KEYS[2])
local expected = tonumber(ARGV[1])
if current == false then
  if expected ~= 0 then return {-1} end
elseif tonumber(current) ~= expected then
  return {0, tonumber(current)}
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('LPUSH', KEYS[3], ARGV[4])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
redis.call('PUBLISH', ARGV[6], ARGV[2])
return {1, tonumber(ARGV[2])}
`)

/** KEYS: state, revision. ARGV: revision, state JSON, channel. Returns 1 when it wrote. */
export const SEED = new LuaScript(`
local current = redis.call('GET', KEYS[2])
if current ~= false and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
`)

/** KEYS: index, instance key. ARGV: id, info JSON, ttl ms. */
export const REGISTER = new LuaScript(`
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[1], ARGV[1])
return 1
`)

/**
 * KEYS: index. ARGV: instance key prefix. Returns the JSON of every live instance and
 * drops expired ids from the index. The instance keys are derived, not declared, but
 * share the index's hash tag, so they are in the same slot (and on the same node).
 */
export const INSTANCES = new LuaScript(`
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local json = redis.call('GET', ARGV[1] .. id)
  if json then out[#out + 1] = json else redis.call('SREM', KEYS[1], id) end
end
return out
`)

/** KEYS: lease. ARGV: holder, ttl ms. Extends the lease iff `holder` holds it; 1 when it did. */
export const RENEW_LEASE = new LuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

/** KEYS: lease. ARGV: holder. Deletes the lease iff `holder` holds it; 1 when it did. */
export const RELEASE_LEASE = new LuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`)
