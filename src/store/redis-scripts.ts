/**
 * The Redis store's Lua scripts (redis.ts). Every multi-key write is one script, so it is
 * atomic and revision-checked on the server; every key a script touches shares the fleet's
 * hash tag (see keys.ts), so the scripts also run on Redis Cluster.
 */
import { createHash } from 'node:crypto'
import type { RedisClient } from './redis-connection.js'

/**
 * A Lua script run with EVALSHA, falling back to EVAL when the server does not know it
 * yet (after a restart, on another Cluster node, or on a replica just promoted: the script
 * cache is not replicated); EVAL caches it for the next call.
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
      if (!(err instanceof Error) || !isNoScript(err)) throw err
      return await client.eval(this.source, keys.length, ...keys, ...args)
    }
  }
}

/**
 * The server answered NOSCRIPT: the script did not run. ioredis's Cluster client wraps that
 * answer when it comes last after a run of redirections (a failover: CLUSTERDOWN and MOVED,
 * then the promoted replica, which has no cached scripts) as "Too many Cluster redirections.
 * Last error: ReplyError: NOSCRIPT ...": still a script that did not run, so still re-sent.
 */
function isNoScript(err: Error): boolean {
  return err.message.startsWith('NOSCRIPT') || err.message.includes('Last error: ReplyError: NOSCRIPT')
}

/**
 * The state's keys, in the order every state script takes them (KEYS[1..9]); COMMIT adds
 * the audit log as KEYS[10]. The four hashes are consecutive so a resource kind is an offset.
 */
export const STATE_KEYS = ['revision', 'routeOrder', 'changelog', 'upstreams', 'routes', 'flags', 'rollouts', 'legacyState', 'digest'] as const

/**
 * Shared by the writing scripts. ARGV from `i` holds, for each hash in turn (upstreams,
 * routes, flags, rollouts), a count n and n name/value pairs; an empty value deletes the
 * name (a resource's JSON is never empty). HSET/HDEL go in batches: Lua's unpack() has a
 * stack limit of a few thousand values.
 */
const WRITE_LIB = `
local BATCH = 1000
local function write_resources(i)
  for h = 4, 7 do
    local n = tonumber(ARGV[i])
    i = i + 1
    local set, del = {}, {}
    for _ = 1, n do
      if ARGV[i + 1] == '' then del[#del + 1] = ARGV[i] else
        set[#set + 1] = ARGV[i]
        set[#set + 1] = ARGV[i + 1]
      end
      i = i + 2
      if #set >= 2 * BATCH then redis.call('HSET', KEYS[h], unpack(set)) set = {} end
      if #del >= BATCH then redis.call('HDEL', KEYS[h], unpack(del)) del = {} end
    end
    if #set > 0 then redis.call('HSET', KEYS[h], unpack(set)) end
    if #del > 0 then redis.call('HDEL', KEYS[h], unpack(del)) end
  end
end

-- A whole-state write: everything replaced (the old layout's document too), order included.
local function replace_all(order, i)
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9])
  redis.call('SET', KEYS[2], order)
  write_resources(i)
end

-- True when a route in the section at ARGV index i (upstreams first) is created or deleted.
local function routes_come_or_go(i)
  i = i + 1 + 2 * tonumber(ARGV[i])
  local n = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, n do
    local exists = redis.call('HEXISTS', KEYS[5], ARGV[i]) == 1
    if exists == (ARGV[i + 1] == '') then return true end
    i = i + 2
  end
  return false
end

local function log_change(revision, what, cap)
  redis.call('LPUSH', KEYS[3], revision .. ' ' .. what)
  redis.call('LTRIM', KEYS[3], 0, tonumber(cap) - 1)
end
`

/**
 * KEYS: STATE_KEYS, events. ARGV: expected, next revision, event JSON, events cap,
 * changelog cap, channel, touched JSON (or `*`: a whole-state write), route order JSON (or
 * empty: unchanged), the change itself as a Delta JSON to publish along (or empty: too large,
 * or whole), the new state's digest, then the resources (WRITE_LIB): with touched names, only those (empty:
 * deleted); whole, all of them. The message is `<revision> <touched JSON>`, followed by a
 * newline and the Delta JSON when given (JSON text never holds a raw newline).
 * Returns {1, rev} written, {0, current} mismatch, {-1} empty, {-2} a route comes or goes
 * but no order was given (nothing written: send the order), {-3} the store holds the old
 * layout (nothing written: convert it first).
 */
export const COMMIT = new LuaScript(`${WRITE_LIB}
local current = redis.call('GET', KEYS[1])
local expected = tonumber(ARGV[1])
if current == false then
  if expected ~= 0 then return {-1} end
elseif tonumber(current) ~= expected then
  return {0, tonumber(current)}
end
if ARGV[7] == '*' then
  replace_all(ARGV[8], 11)
else
  -- A change applies to the per-resource keys: they must hold the state at the expected revision.
  if redis.call('EXISTS', KEYS[8]) == 1 then return {-3} end
  if ARGV[8] == '' then
    if routes_come_or_go(11) then return {-2} end
  else
    redis.call('SET', KEYS[2], ARGV[8])
  end
  write_resources(11)
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[9], ARGV[10])
log_change(ARGV[2], ARGV[7], ARGV[5])
redis.call('LPUSH', KEYS[10], ARGV[3])
redis.call('LTRIM', KEYS[10], 0, tonumber(ARGV[4]) - 1)
if ARGV[9] == '' then
  redis.call('PUBLISH', ARGV[6], ARGV[2] .. ' ' .. ARGV[7])
else
  redis.call('PUBLISH', ARGV[6], ARGV[2] .. ' ' .. ARGV[7] .. '\\n' .. ARGV[9])
end
return {1, tonumber(ARGV[2])}
`)

/**
 * KEYS: STATE_KEYS. ARGV: revision, changelog cap, channel, route order JSON, digest, then
 * every resource (WRITE_LIB). Writes iff the store is empty or holds a lower revision; 1 when it wrote.
 */
export const SEED = new LuaScript(`${WRITE_LIB}
local current = redis.call('GET', KEYS[1])
if current ~= false and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
replace_all(ARGV[4], 6)
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[9], ARGV[5])
log_change(ARGV[1], '*', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ' *')
return 1
`)

/**
 * Converts the old layout (one document, KEYS[8]) to per-resource keys, keeping its
 * revision. KEYS: STATE_KEYS. ARGV: the document's revision, changelog cap, route order
 * JSON, then every resource of the document (WRITE_LIB). Guarded: writes only while the
 * document is still there at that revision (else another instance converted it, or an
 * older version wrote a newer one: read it again). 1 when it converted.
 * No message: the state is the one every instance already holds at that revision.
 */
export const CONVERT = new LuaScript(`${WRITE_LIB}
if redis.call('EXISTS', KEYS[8]) == 0 then return 0 end
local current = redis.call('GET', KEYS[1])
if current ~= false and tonumber(current) ~= tonumber(ARGV[1]) then return 0 end
replace_all(ARGV[3], 4)
redis.call('SET', KEYS[1], ARGV[1])
log_change(ARGV[1], '*', ARGV[2])
return 1
`)

/**
 * The whole state in one snapshot. KEYS: STATE_KEYS. Returns {0} empty, {2} old layout
 * (convert it first), or {1, revision, route order JSON, then HGETALL of each hash}.
 */
export const LOAD = new LuaScript(`
if redis.call('EXISTS', KEYS[8]) == 1 then return {2} end
local revision = redis.call('GET', KEYS[1])
if revision == false then return {0} end
return {1, revision, redis.call('GET', KEYS[2]), redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5]),
  redis.call('HGETALL', KEYS[6]), redis.call('HGETALL', KEYS[7])}
`)

/**
 * What changed after revision ARGV[1], in one snapshot. KEYS: STATE_KEYS.
 * Returns {0} when it cannot tell (empty store, lower revision, old layout, a gap longer than
 * the change log, a whole-state write in between), else {1, current revision, route order
 * JSON or nil, the digest or nil, then for each hash: the touched names, and their JSON (nil: deleted)}.
 */
export const CHANGES = new LuaScript(`
local BATCH = 1000
if redis.call('EXISTS', KEYS[8]) == 1 then return {0} end
local current = redis.call('GET', KEYS[1])
if current == false then return {0} end
current = tonumber(current)
local asked = tonumber(ARGV[1])
if asked == nil or asked > current then return {0} end
local n = current - asked
local kinds = {'upstreams', 'routes', 'flags', 'rollouts'}
local seen, names = {{}, {}, {}, {}}, {{}, {}, {}, {}}
local order = false
if n > 0 then
  local entries = redis.call('LRANGE', KEYS[3], 0, n - 1)
  if #entries < n then return {0} end
  for index, entry in ipairs(entries) do
    local space = string.find(entry, ' ', 1, true)
    if space == nil or tonumber(string.sub(entry, 1, space - 1)) ~= current - index + 1 then return {0} end
    local body = string.sub(entry, space + 1)
    if body == '*' then return {0} end
    local touched = cjson.decode(body)
    for k, kind in ipairs(kinds) do
      for _, name in ipairs(touched[kind] or {}) do
        if not seen[k][name] then
          seen[k][name] = true
          names[k][#names[k] + 1] = name
        end
      end
    end
    if touched.order == true then order = true end
  end
end
local reply = {1, current, false, redis.call('GET', KEYS[9])}
if order then reply[3] = redis.call('GET', KEYS[2]) end
for k = 1, 4 do
  local values = {}
  for from = 1, #names[k], BATCH do
    local part = redis.call('HMGET', KEYS[3 + k], unpack(names[k], from, math.min(from + BATCH - 1, #names[k])))
    for _, v in ipairs(part) do values[#values + 1] = v end
  end
  reply[#reply + 1] = names[k]
  reply[#reply + 1] = values
end
return reply
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
