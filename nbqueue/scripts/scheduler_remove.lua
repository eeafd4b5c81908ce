-- scheduler_remove: delete a job scheduler and its pending job (if it has not started; a
-- running one finishes, and its worker finds no scheduler to continue).
-- KEYS: 1 the queue prefix (see includes/common.lua), 2 schedulers ZSET.
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 scheduler hash prefix, 5 scheduler id.
-- Returns 1 removed, 0 no such scheduler.
-- @include common
-- @include scheduler
allow_oom()  -- must run on a full Redis (see includes/common.lua)
check_tick_keys()  -- before the first write (see includes/scheduler.lua)
local sid = ARGV[5]
local key = SCHED .. sid
local nxt = redis.call('HGET', key, 'next')
redis.call('ZREM', K_SCHEDS, sid)
if not nxt then return 0 end
if nxt ~= '0' then drop_pending(tick_job_id(sid, nxt)) end
redis.call('DEL', key)
return 1
