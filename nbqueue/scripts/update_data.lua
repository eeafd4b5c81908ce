-- update_data: replace the data of a job that has not finished (waiting, delayed, active:
-- a processor may checkpoint into its own job). The name stays as added (BullMQ).
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 job id, 5 data JSON (validated by the
--   client: the same rules and size limit as add).
-- Returns {1, state} updated, {0} no such job, {-1, state} finished (nothing written).
-- @include common
local id = ARGV[4]
local key = JOB .. id
local state = redis.call('HGET', key, 'state')
if not state then return {0} end
if state == 'completed' or state == 'failed' then return {-1, state} end
redis.call('HSET', key, 'data', ARGV[5])
emit('updated', {id})
return {1, state}
