-- progress: store a job's progress and publish a `progress` event.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 job id, 5 progress JSON.
-- Returns 1, or 0 when the job does not exist.
-- @include common
local key = JOB .. ARGV[4]
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HSET', key, 'prog', ARGV[5])
emit('progress', {ARGV[4]}, {'data', ARGV[5]})
return 1
