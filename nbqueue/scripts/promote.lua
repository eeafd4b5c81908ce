-- promote: a delayed job waits no longer: it joins its priority level now (at the back, as
-- if added now; in front for a lifo job), like BullMQ's promote.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 job id.
-- Returns {1, 'waiting'} promoted, {0} no such job, {-1, state} not delayed (nothing written).
-- @include common
local id = ARGV[4]
local key = JOB .. id
local state = redis.call('HGET', key, 'state')
if not state then return {0} end
if state ~= 'delayed' or not redis.call('ZSCORE', K_DELAYED, id) then return {-1, state} end
check_types(K_WAIT, 'zset')  -- validation before the first write (see common.lua)
check_int(K_CTR)
redis.call('ZREM', K_DELAYED, id)
redis.call('HSET', key, 'delay', '0')
requeue({id})
emit('promoted', {id})
emit('waiting', {id})
push_marker()
return {1, 'waiting'}
