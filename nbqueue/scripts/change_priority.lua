-- change_priority: give a waiting or delayed job another priority level. A waiting job moves
-- to the back of its new level (as if added now) or, with lifo, to its front; a delayed job
-- keeps its due time and joins the new level when it is promoted.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 job id, 5 priority 1..5, 6 '1' = lifo.
-- Returns {1, state} changed, {0} no such job, {-1, state} neither waiting nor delayed, or
-- an error for a priority out of range (nothing written in those cases).
-- @include common
local id, prio = ARGV[4], tonumber(ARGV[5])
if not prio or prio < 1 or prio > 5 or prio ~= math.floor(prio) then
  return redis.error_reply('ERR nbqueue change_priority: priority must be 1..5, not ' .. ARGV[5])
end
local key = JOB .. id
local state = redis.call('HGET', key, 'state')
if not state then return {0} end
if state == 'waiting' and redis.call('ZSCORE', K_WAIT, id) then
  check_int(K_CTR)  -- validation before the first write (see common.lua)
  local seq = redis.call('INCR', K_CTR)
  if ARGV[6] == '1' then seq = -seq end
  redis.call('HSET', key, 'prio', ARGV[5], 'seq', fmt(seq))
  redis.call('ZADD', K_WAIT, wait_score(prio, seq), id)
elseif state == 'delayed' and redis.call('ZSCORE', K_DELAYED, id) then
  redis.call('HSET', key, 'prio', ARGV[5])
else
  return {-1, state}
end
if ARGV[6] == '1' then redis.call('HSET', key, 'lifo', '1') end
emit('priority', {id}, {'priority', ARGV[5]})
return {1, state}
