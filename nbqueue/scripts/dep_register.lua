-- dep_register: record a waiting job (the parent) on its dependencies of THIS queue, so
-- that their end notifies it (finish.lua); a dependency that has ended already, or is
-- gone, is notified at once. Idempotent: run again by the upkeep for parents whose
-- re-check time has come (a crash between add_dependent and this step is recovered so).
-- KEYS: 1 this (the dependencies') queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 parent queue, 5 parent id,
--   then 2 per dependency: its id and the sequence number it had when the parent was
--   added (another job that re-used the id later is not the dependency: it counts as gone).
-- Returns the number of notifications queued (ZSET notify; a resolver delivers them).
-- @include common
-- @include flows
local me = ARGV[4] .. ' ' .. ARGV[5]
local queued = 0
for i = 6, #ARGV, 2 do
  local cid, seq = ARGV[i], ARGV[i + 1]
  local key = JOB .. cid
  local f = redis.call('HMGET', key, 'state', 'rv', 'fr', 'par', 'seq')
  local kind, value
  if not f[1] or f[5] ~= seq then
    kind, value = 'm', 'job ' .. cid .. ' of queue ' .. QNAME .. ' is gone (removed)'
  elseif f[1] == 'completed' then
    kind, value = 'c', f[2] or 'null'
  elseif f[1] == 'failed' then
    kind, value = 'f', f[3] or 'failed'
  else
    local ok, parents = pcall(cjson.decode, f[4] or '[]')
    if not ok or type(parents) ~= 'table' then parents = {} end
    local known = false
    for _, p in ipairs(parents) do if p == me then known = true end end
    if not known then
      parents[#parents + 1] = me
      redis.call('HSET', key, 'par', cjson.encode(parents))
    end
  end
  if kind then
    redis.call('ZADD', K_NOTIFY, fmt(NOW),
      cjson.encode({ARGV[4], ARGV[5], QNAME, cid, kind, value}))
    queued = queued + 1
  end
end
return queued
