-- The fetch step (BullMQ's moveToActive), shared by fetch.lua and finish.lua.
-- Promotes due delayed jobs, honours pause, the global rate limit and the global concurrency
-- limit (meta field gc), pops up to `want`
-- jobs in priority order, locks them for this worker, and returns them.
-- Returns {next_delay_ms, limit_ttl_ms, id, lock, name, data, opts, attempts_made, ts,
--          prio, progress, stalled_count, wait_ms, (11 fields per job)...}
--   wait_ms: a first attempt's wait (add or end of delay -> now), -1 for later attempts.

-- Returns the earliest due time still delayed after promotion (nil: none).
local function promote_delayed()
  -- One cheap look at the head first: in a steady drain there is usually nothing due.
  local head = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
  if #head == 0 then return nil end
  local due_at = math.floor(tonumber(head[2]) / 4096)
  if due_at > NOW then return due_at end
  local edge = fmt(NOW * 4096 + 4095)
  local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', edge, 'LIMIT', 0, 1000)
  -- validation before the first write (see common.lua); requeue skips non-hash keys
  check_types(K_WAIT, 'zset')
  check_int(K_CTR)
  zrem_many(K_DELAYED, due)
  requeue(due)
  emit('waiting', due)
  head = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
  if #head == 0 then return nil end
  return math.floor(tonumber(head[2]) / 4096)
end

local function fetch_jobs(want, token, lock_ms)
  -- Validation before the first job write (see common.lua): the settings and the limiter
  -- are read, and the active set checked, before promote_delayed or the pop write anything.
  local meta = redis.call('HMGET', K_META, 'paused', 'rl_max', 'rl_dur', 'gc')
  if meta[1] == '1' then want = 0 end
  local rl_max = tonumber(meta[2])
  local limiter_used = 0
  if want > 0 and rl_max then
    limiter_used = tonumber(redis.call('GET', K_LIMITER) or '0')
    if not limiter_used then
      error('nbqueue: key ' .. K_LIMITER .. ' is not an integer counter; nothing was changed')
    end
  end
  if want > 0 then check_types(K_ACTIVE, 'zset') end
  local next_due = promote_delayed()
  local reply = {-1, 0}
  -- Global concurrency (Queue.set_global_concurrency): at most gc jobs active in the queue,
  -- whichever workers hold them. Only looked at when set.
  local gc = tonumber(meta[4])
  if want > 0 and gc then
    local running = redis.call('ZCARD', K_ACTIVE)
    want = math.max(0, math.min(want, gc - running))
  end
  if want > 0 and rl_max then
    local used = limiter_used
    if used >= rl_max then
      local ttl = redis.call('PTTL', K_LIMITER)
      if ttl < 0 then redis.call('PEXPIRE', K_LIMITER, meta[3]); ttl = tonumber(meta[3]) end
      reply[2] = ttl
      want = 0
    else
      want = math.min(want, rl_max - used)
    end
  end
  local popped = {}
  if want > 0 then popped = redis.call('ZPOPMIN', K_WAIT, want) end
  local ids = {}
  local zargs = {}
  local lock_until = fmt(NOW + lock_ms)
  for i = 1, #popped, 2 do
    local id = popped[i]
    local key = JOB .. id
    -- pcall: a key that is not a hash is no job (it just leaves the wait set)
    local f = redis.pcall('HMGET', key, 'name', 'data', 'opts', 'atm', 'ts', 'prio', 'prog', 'stc', 'ats',
      'delay')
    if type(f) == 'table' and not f.err and f[2] then
      local runs = (tonumber(f[9]) or 0) + 1
      local lock = token .. ':' .. runs
      redis.call('HSET', key, 'state', 'active', 'pon', NOW, 'lk', lock, 'ats', runs)
      ids[#ids + 1] = id
      zargs[#zargs + 1] = lock_until
      zargs[#zargs + 1] = id
      local r = reply
      r[#r + 1] = id; r[#r + 1] = lock; r[#r + 1] = f[1] or ''; r[#r + 1] = f[2]
      r[#r + 1] = f[3] or '{}'; r[#r + 1] = f[4] or '0'; r[#r + 1] = f[5] or '0'
      r[#r + 1] = f[6] or '3'; r[#r + 1] = f[7] or ''; r[#r + 1] = f[8] or '0'
      -- wait ms of a first attempt (add, or the end of its delay, to now; server clock),
      -- -1 for a later one: the worker counts it (nbqueue_job_wait_seconds), no command here
      local wait, added = -1, tonumber(f[5])
      if runs == 1 and added then wait = math.max(0, NOW - added - (tonumber(f[10]) or 0)) end
      r[#r + 1] = wait
    end
  end
  if #ids > 0 then
    redis.call('ZADD', K_ACTIVE, unpack(zargs))
    if rl_max then
      if redis.call('INCRBY', K_LIMITER, #ids) == #ids then
        redis.call('PEXPIRE', K_LIMITER, meta[3])
      end
    end
    -- Fewer than asked means nothing is left; all asked for, then look.
    if #popped / 2 == want and redis.call('ZCARD', K_WAIT) > 0
        and not (gc and redis.call('ZCARD', K_ACTIVE) >= gc) then
      emit('active', ids)
      -- More wait: wake another blocked worker (a marker already there will do).
      push_marker()
    else
      -- This fetch took the last waiting jobs: one stream entry carries both events
      -- (parse_events splits it).
      emit('active', ids, {'also', 'drained'})
    end
  end
  -- With a global limit, a slot this call leaves free (a finish) must wake another worker:
  -- one blocked while the limit was reached waits on the marker, not on a timer.
  if gc and #ids == 0 and reply[2] == 0 and redis.call('ZCARD', K_ACTIVE) < gc and redis.call('ZCARD', K_WAIT) > 0
      and meta[1] ~= '1' then
    push_marker()
  end
  if next_due then reply[1] = math.max(0, next_due - NOW) end
  return reply
end

-- A worker that parked (fetch.lua with park > 0) leaves the idle registry, and takes the job
-- a producer may have handed it meanwhile (add.lua): appended to `reply` like fetched jobs.
-- It runs after the fetch's writes: pcall, so that a broken registry or hand-off key never
-- stops the script half-way (the job in a hand-off list is active and locked already; if
-- it cannot be read, its lock expires and the stalled sweep re-queues it).
local function unpark(token, lock_ms, reply)
  redis.pcall('ZREM', K_IDLE, token .. '|' .. lock_ms)
  local hkey = BASE .. 'h:' .. token
  local items = redis.pcall('LRANGE', hkey, 0, -1)
  if type(items) ~= 'table' or items.err or #items == 0 then return end
  redis.call('DEL', hkey)
  for i = 1, #items do
    if items[i] ~= '0' then  -- '0' only ends a BLPOP (see fetch.lua)
      local ok, f = pcall(cjson.decode, items[i])
      if ok and type(f) == 'table' then
        for j = 1, #f do reply[#reply + 1] = f[j] end
      end
    end
  end
end

-- A worker about to park (its BLPOP on its hand-off list, the marker and its wake key, for
-- `park_ms`, follows this script: fetch.lua, or finish.lua with a park) takes what was handed
-- to it meanwhile (unpark: an add may have taken a registration whose BLPOP had already
-- returned), then registers as idle only if it got nothing: with jobs, a limit, or a delayed
-- job due before the BLPOP would time out, '0' on its hand-off list ends that BLPOP at once.
-- (Registering on top of a handed job left a registration nobody blocked on.)
local function park(token, lock_ms, park_ms, reply)
  unpark(token, lock_ms, reply)
  local member = token .. '|' .. lock_ms
  -- 10 ms of slack: the worker computed the BLPOP timeout from a slightly older reply
  -- pcall: after the fetch's writes, the registry must not stop the script (see unpark)
  if #reply > 2 or reply[2] > 0 or (reply[1] >= 0 and reply[1] + 10 < park_ms) then
    redis.pcall('ZREM', K_IDLE, member)
    redis.pcall('RPUSH', BASE .. 'h:' .. token, '0')
  else
    redis.pcall('ZADD', K_IDLE, fmt(NOW + park_ms + 1000), member)
  end
end

-- What a fetch does for the registry once it has its jobs (fetch.lua, finish.lua): park when
-- `park_ms` > 0, else unpark when `unpark_flag` is '1' (an earlier park may still hold).
local function park_or_unpark(token, lock_ms, park_ms, unpark_flag, reply)
  if park_ms > 0 then
    park(token, lock_ms, park_ms, reply)
  elseif unpark_flag == '1' then
    unpark(token, lock_ms, reply)
  end
end
