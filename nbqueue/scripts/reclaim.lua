-- reclaim: a worker whose connection died (a reply it never read: a fetch, or a job handed
-- to it while parked) gives back the active jobs locked by its token that it does not
-- hold. They go back to the front of their level in wait (their original sequence number),
-- not counted as an attempt, at once -- not at lock expiry + the next stalled sweep.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 worker token, then the ids it holds.
-- Returns the ids given back.
-- @include common
allow_oom()  -- must run on a full Redis (see includes/common.lua); it frees a slot
local prefix = ARGV[4] .. ':'
local held = {}
for i = 5, #ARGV do held[ARGV[i]] = true end
-- Validation before the first job write (see common.lua): read every candidate first.
local back, seen = {}, {}
local active = redis.call('ZRANGE', K_ACTIVE, 0, -1)
for _, id in ipairs(active) do
  if not held[id] then
    local f = redis.pcall('HMGET', JOB .. id, 'lk', 'prio', 'seq')
    if type(f) == 'table' and not f.err and f[1]
        and string.sub(f[1], 1, #prefix) == prefix then
      back[#back + 1] = id
      seen[#seen + 1] = f
    end
  end
end
if #back == 0 then return back end
check_types(K_WAIT, 'zset')
for i, id in ipairs(back) do
  local f = seen[i]
  redis.call('ZREM', K_ACTIVE, id)
  redis.call('HSET', JOB .. id, 'state', 'waiting', 'lk', '')
  redis.call('ZADD', K_WAIT, wait_score(f[2] or 3, f[3] or 0), id)
end
emit('waiting', back)
push_marker()
return back
