-- Shared by the scheduler_* scripts (include after common): job schedulers (recurring jobs).
-- KEYS[2] schedulers (ZSET: scheduler id -> its pending tick ms; 0 once exhausted).
-- ARGV[4] scheduler hash prefix ("nbq:{q}:scheduler:"); the hash of scheduler <id> holds
--   cfg (the schedule, JSON), name, data, opts, prio (the job template), next (pending tick
--   ms, '0' = exhausted), done (last tick a worker fetched), count (jobs made), created, updated.
-- Ticks travel as decimal strings: Lua would print a 13-digit number as 1.7e+12.
local K_SCHEDS = KEYS[2]
local SCHED = ARGV[4]

-- Validation before the first write (see common.lua) of the scripts that add or drop a
-- tick's job: the sets it goes to or leaves, and the id counter.
local function check_tick_keys()
  check_types(K_WAIT, 'zset', K_DELAYED, 'zset', K_SCHEDS, 'zset')
  check_int(K_CTR)
end

local function tick_job_id(sid, tick) return 'repeat:' .. sid .. ':' .. tick end

-- Add the job of one tick unless a job with its id exists (dedupe by id: double adds are
-- harmless). Delayed until the tick, or waiting when the tick is due. Returns 1 if added.
local function add_tick_job(sid, tick, name, data, opts, prio)
  local id = tick_job_id(sid, tick)
  local key = JOB .. id
  if redis.call('EXISTS', key) == 1 then return 0 end
  local seq = redis.call('INCR', K_CTR)
  local delay = math.max(0, tonumber(tick) - NOW)
  if delay > 0 then
    redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', NOW, 'prio', prio,
      'delay', fmt(delay), 'seq', seq, 'atm', 0, 'state', 'delayed', 'sched', sid, 'tick', tick)
    redis.call('ZADD', K_DELAYED, delayed_score(tick, seq), id)
    emit('added', {id})
    emit('delayed', {id})
  else
    redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', NOW, 'prio', prio,
      'delay', 0, 'seq', seq, 'atm', 0, 'state', 'waiting', 'sched', sid, 'tick', tick)
    redis.call('ZADD', K_WAIT, wait_score(prio, seq), id)
    emit('added', {id})
  end
  push_marker()
  return 1
end

-- Remove a tick's job if it has not started (delayed or waiting). Returns 1 if removed.
local function drop_pending(id)
  local key = JOB .. id
  local st = redis.call('HGET', key, 'state')
  if st == 'delayed' or st == 'waiting' then
    redis.call('ZREM', K_DELAYED, id)
    redis.call('ZREM', K_WAIT, id)
    redis.call('DEL', key)
    emit('removed', {id})
    return 1
  end
  return 0
end
