-- scheduler_next: after a worker fetched the job of a scheduler's pending tick, make the job
-- of the next tick (computed in Python with croniter) the pending one. Only the call whose
-- tick is still the scheduler's pending tick acts, so however many workers or processes
-- report the same tick (a re-fetched stalled job, a retried call), each tick gets one job.
-- KEYS: 1 the queue prefix (see includes/common.lua), 2 schedulers ZSET.
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 scheduler hash prefix, then triples:
--   scheduler id, fetched tick ms, next tick ms ('' = none: the end date has passed).
-- Returns per triple: 1 next tick queued, 0 nothing to do, -1 the scheduler is exhausted.
-- @include common
-- @include scheduler
check_tick_keys()  -- before the first write (see includes/scheduler.lua)
local out = {}
for i = 5, #ARGV, 3 do
  local sid, cur, nxt = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = SCHED .. sid
  local h = redis.call('HMGET', key, 'next', 'count', 'cfg', 'name', 'data', 'opts', 'prio')
  if not h[1] or h[1] ~= cur then
    out[#out + 1] = 0
  else
    redis.call('HSET', key, 'done', cur)
    local limit = tonumber(cjson.decode(h[3])['limit'] or 0) or 0
    if nxt == '' or (limit > 0 and tonumber(h[2] or '0') >= limit) then
      redis.call('HSET', key, 'next', '0')
      redis.call('ZADD', K_SCHEDS, 0, sid)
      out[#out + 1] = -1
    elseif tonumber(nxt) <= tonumber(cur) then
      out[#out + 1] = 0
    else
      redis.call('HSET', key, 'next', nxt)
      redis.call('HINCRBY', key, 'count', 1)
      redis.call('ZADD', K_SCHEDS, nxt, sid)
      add_tick_job(sid, nxt, h[4], h[5], h[6], h[7])
      out[#out + 1] = 1
    end
  end
end
return out
