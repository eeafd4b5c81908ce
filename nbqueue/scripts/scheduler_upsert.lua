-- scheduler_upsert: create or update a job scheduler (a recurring job) and its pending job.
-- Idempotent: the same schedule again keeps the pending tick (a re-run notebook cell never
-- makes a second schedule); a changed schedule replaces the not-yet-started pending job.
-- KEYS: 1 the queue prefix (see includes/common.lua), 2 schedulers ZSET.
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 scheduler hash prefix, 5 scheduler id,
--   6 cfg (schedule JSON), 7 first tick ms (computed in Python after now), 8 job name,
--   9 data JSON, 10 opts JSON, 11 priority.
-- Returns {status, tick}: created|updated|unchanged|rearmed with the pending tick,
--   exhausted with '0', or stale with the last fetched tick (the first tick must come after
--   it: Python recomputes and calls again).
-- @include common
-- @include scheduler
check_tick_keys()  -- before the first write (see includes/scheduler.lua)
local sid, cfg, first = ARGV[5], ARGV[6], ARGV[7]
local name, data, opts, prio = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local key = SCHED .. sid
local h = redis.call('HMGET', key, 'cfg', 'next', 'done')
local existed = h[1] ~= false
local done = tonumber(h[3] or '0') or 0
local status = 'created'

if existed and h[1] == cfg then
  -- The same schedule: refresh the job template, keep the pending tick.
  redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'prio', prio, 'updated', NOW)
  local nxt = h[2]
  if nxt == '0' then return {'exhausted', '0'} end
  local id = tick_job_id(sid, nxt)
  local st = redis.call('HGET', JOB .. id, 'state')
  if st == 'delayed' or st == 'waiting' then
    local cur = redis.call('HMGET', JOB .. id, 'name', 'data', 'opts', 'prio')
    if cur[1] ~= name or cur[2] ~= data or cur[3] ~= opts or cur[4] ~= prio then
      drop_pending(id)  -- re-added with the new template, same id and tick
      add_tick_job(sid, nxt, name, data, opts, prio)
    end
    return {'unchanged', nxt}
  elseif st == 'active' then
    return {'unchanged', nxt}  -- its worker queues the next tick
  end
  -- The pending job is gone (drained, removed, or it failed before its follow-up):
  -- re-arm at the first tick after now, never at or before one already handed out.
  done = math.max(done, tonumber(nxt) or 0)
  local limit = tonumber(cjson.decode(cfg)['limit'] or 0) or 0
  local count = tonumber(redis.call('HGET', key, 'count') or '0') or 0
  if limit > 0 and count >= limit then
    redis.call('HSET', key, 'next', '0')
    redis.call('ZADD', K_SCHEDS, 0, sid)
    return {'exhausted', '0'}
  end
  status = 'rearmed'
elseif existed then
  drop_pending(tick_job_id(sid, h[2]))
  status = 'updated'
end

if tonumber(first) <= done then return {'stale', fmt(done)} end
if status ~= 'rearmed' then
  redis.call('HSET', key, 'cfg', cfg, 'count', 0)
  if not existed then redis.call('HSET', key, 'created', NOW) end
end
redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'prio', prio, 'next', first,
  'updated', NOW)
redis.call('HINCRBY', key, 'count', 1)
redis.call('ZADD', K_SCHEDS, first, sid)
add_tick_job(sid, first, name, data, opts, prio)
return {status, first}
