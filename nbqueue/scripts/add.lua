-- add: add one or many jobs atomically; an existing job id is returned, not re-added.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, then 6 per job:
--   id ('' = next counter value), name, data JSON, opts JSON, priority 1..5, delay ms.
-- Returns {s, i1, i2, ...}: job k of the call (1-based) got sequence number s + k, which is
-- also its id when it had none; i1, i2... are the jobs whose given id already existed
-- (a short reply: a bulk add of fresh jobs answers with one number).
-- @include common
local n = (#ARGV - 3) / 6
-- One INCRBY reserves a sequence number for every job of the call.
local seq0 = redis.call('INCRBY', K_CTR, n) - n
TRIM_EVENTS = n > 1 or seq0 % 32 == 0
local out, added, delayed, zwait, zdelayed = {seq0}, {}, {}, {}, {}
-- Numbers passed to redis.call are formatted by Redis: hand it strings made once instead.
local now_s = fmt(NOW)
local prio_base = {}

-- A single fresh job due now, while a worker is parked (idle, blocked on its hand-off list:
-- see fetch.lua) and the queue is empty, goes straight to that worker: locked and active
-- here, pushed onto the list its BLPOP watches. That saves the fetch on the way from add to
-- start. Returns the worker's token and lock ms, or nil (the job then waits as usual).
local function idle_taker()
  local top = redis.call('ZPOPMAX', K_IDLE)
  if #top == 0 then return nil end
  if tonumber(top[2]) < NOW then
    redis.call('DEL', K_IDLE)  -- the freshest registration has expired: so have all
    return nil
  end
  local meta = redis.call('HMGET', K_META, 'paused', 'rl_max')
  -- jobs already waiting go first (strict priority, FIFO); pause and rate limits are
  -- the fetch's business
  if meta[1] == '1' or meta[2] or redis.call('ZCARD', K_WAIT) > 0 then
    redis.call('ZADD', K_IDLE, top[2], top[1])
    return nil
  end
  local token, lock_ms = string.match(top[1], '^(.*)|(%d+)$')
  if not token then return nil end
  return token, tonumber(lock_ms)
end

local taker, taker_lock_ms, marker_len
if n == 1 and ARGV[4] == '' and tonumber(ARGV[9]) == 0 then
  -- A marker still there means no worker is blocked right now (one would have popped it):
  -- then nobody is parked either, and the registry need not be looked at.
  marker_len = redis.call('LLEN', K_MARKER)
  if marker_len == 0 then taker, taker_lock_ms = idle_taker() end
end

for k = 1, n do
  local i = 4 + (k - 1) * 6
  local seq = seq0 + k
  local sid = fmt(seq)
  local id, name, data, opts, prio = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local delay = tonumber(ARGV[i + 5])
  local existed = false
  if id == '' then
    -- A fresh counter value cannot name an existing job: custom ids are never all digits.
    id = sid
  else
    existed = redis.call('EXISTS', JOB .. id) == 1
  end
  if existed then
    out[#out + 1] = k
  else
    local key = JOB .. id
    -- attempts made and a zero delay are left out: absent means 0
    if delay > 0 then
      redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', now_s,
        'prio', prio, 'seq', sid, 'state', 'delayed', 'delay', ARGV[i + 5])
      zdelayed[#zdelayed + 1] = delayed_score(NOW + delay, seq); zdelayed[#zdelayed + 1] = id
      delayed[#delayed + 1] = id
    elseif taker then
      local lock = taker .. ':1'
      redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', now_s,
        'prio', prio, 'seq', sid, 'state', 'active', 'pon', now_s, 'lk', lock, 'ats', '1')
      redis.call('ZADD', K_ACTIVE, fmt(NOW + taker_lock_ms), id)
      -- the fields of a fetch reply entry (includes/fetch.lua)
      local hkey = BASE .. 'h:' .. taker
      redis.call('RPUSH', hkey, cjson.encode({id, lock, name, data, opts, '0', now_s, prio,
        '', '0'}))
      redis.call('PEXPIRE', hkey, taker_lock_ms)  -- a worker that died parked: gone with it
      emit('added', {id}, {'then', 'active', 'also', 'drained'})
    else
      redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', now_s,
        'prio', prio, 'seq', sid, 'state', 'waiting')
      local base = prio_base[prio]
      if not base then
        base = (tonumber(prio) or 3) * PRIO_SHIFT
        prio_base[prio] = base
      end
      zwait[#zwait + 1] = fmt(base + seq); zwait[#zwait + 1] = id
    end
    if not taker then added[#added + 1] = id end
  end
end
for i = 1, #zwait, 1000 do
  redis.call('ZADD', K_WAIT, unpack(zwait, i, math.min(i + 999, #zwait)))
end
for i = 1, #zdelayed, 1000 do
  redis.call('ZADD', K_DELAYED, unpack(zdelayed, i, math.min(i + 999, #zdelayed)))
end
if #added > 0 then
  emit('added', added)
  emit('delayed', delayed)
  if marker_len == nil then push_marker()
  elseif marker_len == 0 then redis.call('RPUSH', K_MARKER, '1') end
end
return out
