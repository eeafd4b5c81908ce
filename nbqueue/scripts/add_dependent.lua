-- add_dependent: add one job that waits for other jobs (its dependencies) to end first:
-- state 'waiting-children' until dep_resolve.lua has seen every one of them end.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 id ('' = next counter value), 5 name,
--   6 data JSON, 7 opts JSON, 8 priority 1..5, 9 delay ms (counted from the release),
--   10 policy on a failed dependency ('fail' | 'ignore'), 11 re-check ms (when the
--   dependencies' registration is looked at again: nbqueue.flows.upkeep),
--   then 2 per dependency: "<queue> <id>" and its sequence number (as read at add time).
-- Writes HASH deps:<id> ("<queue> <id>" -> "p<seq>" = pending) and the job, whose
-- 'dpend' counts the pending dependencies and 'dl' lists them (JSON, flat: "<queue> <id>",
-- seq, ...; kept until they release it, so that a retry can re-arm it: includes/flows.lua);
-- ZSET waiting-children (score = re-check time).
-- A fresh id is the counter value and its label (includes/ids.lua).
-- Returns {id, 1 if a job with this id existed already (nothing written), seq (also its
--   first generation, 'arm': includes/flows.lua)}.
-- @include common
-- @include ids
-- @include flows
local id = ARGV[4]
local n = (#ARGV - 11) / 2
if n < 1 or n ~= math.floor(n) then
  return redis.error_reply('ERR add_dependent: no dependencies or an odd argument count')
end
if ARGV[10] ~= 'fail' and ARGV[10] ~= 'ignore' then
  return redis.error_reply('ERR add_dependent: policy must be fail or ignore')
end
if id ~= '' and redis.call('EXISTS', JOB .. id) == 1 then return {id, 1, 0} end
-- validation before the first write (see common.lua)
check_int(K_CTR)
check_types(K_WCHILD, 'zset')
if id ~= '' then check_types(BASE .. 'deps:' .. id, 'hash') end
local label = id == '' and id_label() or ''
local seq = redis.call('INCR', K_CTR)
if id == '' then id = fmt(seq) .. label end
local key = JOB .. id
local fields = {'name', ARGV[5], 'data', ARGV[6], 'opts', ARGV[7], 'ts', fmt(NOW),
  'prio', ARGV[8], 'seq', fmt(seq), 'state', 'waiting-children', 'dpol', ARGV[10],
  'dpend', fmt(n), 'arm', fmt(seq)}  -- its first generation (includes/flows.lua)
local dl = {}
for i = 12, #ARGV do dl[#dl + 1] = ARGV[i] end
fields[#fields + 1] = 'dl'; fields[#fields + 1] = cjson.encode(dl)
if tonumber(ARGV[9]) > 0 then fields[#fields + 1] = 'delay'; fields[#fields + 1] = ARGV[9] end
redis.call('HSET', key, unpack(fields))
local dkey = BASE .. 'deps:' .. id
if ARGV[4] == '' then redis.call('DEL', dkey) end  -- a fresh id: no leftover can be there
write_deps(dkey, ARGV, 12)
redis.call('ZADD', K_WCHILD, fmt(NOW + tonumber(ARGV[11])), id)
emit('added', {id})
emit('waiting-children', {id})
return {id, 0, seq}
