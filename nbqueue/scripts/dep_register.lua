-- dep_register: record a waiting job (the parent) on its dependencies of THIS queue, so
-- that their end notifies it (finish.lua); a dependency that has ended already, or is
-- gone, is notified at once. Idempotent: run again by the upkeep for parents whose
-- re-check time has come (a crash between add_dependent and this step is recovered so).
-- KEYS: 1 this (the dependencies') queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 parent queue, 5 parent id, 6 the
--   parent's generation (includes/flows.lua: its notifications carry it; kept in 'parg'),
--   then 2 per dependency: its id and the sequence number it had when the parent was
--   added (another job that re-used the id later is not the dependency: it counts as gone).
-- Returns the number of notifications queued (ZSET notify; a resolver delivers them).
-- @include common
-- @include flows
local me, gen = ARGV[4] .. ' ' .. ARGV[5], tonumber(ARGV[6]) or 0
-- Read every dependency first (a key that is not a hash is no job: gone), then write
-- (validation before the first write, see common.lua).
check_types(K_NOTIFY, 'zset')
local plan = {}
for i = 7, #ARGV, 2 do
  local cid, seq = ARGV[i], ARGV[i + 1]
  local f = redis.pcall('HMGET', JOB .. cid, 'state', 'rv', 'fr', 'par', 'seq', 'parg')
  if f.err then f = {} end
  local step = {cid = cid}
  if not f[1] or f[5] ~= seq then
    step.kind, step.value = 'm', 'job ' .. cid .. ' of queue ' .. QNAME .. ' is gone (removed)'
  elseif f[1] == 'completed' then
    step.kind, step.value = 'c', f[2] or 'null'
  elseif f[1] == 'failed' then
    step.kind, step.value = 'f', f[3] or 'failed'
  else
    local ok, parents = pcall(cjson.decode, f[4] or '[]')
    if not ok or type(parents) ~= 'table' then parents = {} end
    local known = false
    for _, p in ipairs(parents) do if p == me then known = true end end
    if not known then
      parents[#parents + 1] = me
      step.par = cjson.encode(parents)
    end
    -- the generation its end must carry; never lowered: a lower one is a registration
    -- that arrives after a newer arming's, stale (includes/flows.lua)
    local ok2, gens = pcall(cjson.decode, f[6] or '{}')
    if not ok2 or type(gens) ~= 'table' then gens = {} end
    if gen > (tonumber(gens[me]) or 0) then
      gens[me] = fmt(gen)
      step.parg = cjson.encode(gens)
    end
  end
  plan[#plan + 1] = step
end
local queued = 0
for _, step in ipairs(plan) do
  if step.kind then
    queue_notification(ARGV[4], ARGV[5], step.cid, step.kind, step.value, gen)
    queued = queued + 1
  else
    local fields = {}
    if step.par then fields[1] = 'par'; fields[2] = step.par end
    if step.parg then fields[#fields + 1] = 'parg'; fields[#fields + 1] = step.parg end
    if #fields > 0 then redis.call('HSET', JOB .. step.cid, unpack(fields)) end
  end
end
return queued
