-- release_worker: a worker whose process is gone (nbqueue/reaper.py: registered on this
-- machine, its pid no longer alive) leaves the worker registry, and the locks of the jobs
-- it held expire now: the stalled sweep the caller runs next (stalled.lua; its interval
-- guard is dropped here) moves them back to wait, or fails them after max_stalled_count
-- stalls, at once rather than when their locks would have expired.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 worker id.
-- Locks are "<worker id>:<runs>" (fetch.lua). Returns the number of jobs released.
-- @include common
allow_oom()  -- frees memory; must run on a full Redis (see includes/common.lua)
local id = ARGV[4]
if id == '' then return redis.error_reply('ERR nbqueue release_worker: no worker id') end
local reg = BASE .. 'workers'
-- validation before the first write (see common.lua)
check_types(K_ACTIVE, 'zset', reg, 'zset')
local mine = id .. ':'
local held = {}
for _, jid in ipairs(redis.call('ZRANGE', K_ACTIVE, 0, -1)) do
  local lk = redis.pcall('HGET', JOB .. jid, 'lk')
  if type(lk) == 'string' and string.sub(lk, 1, #mine) == mine then held[#held + 1] = jid end
end
redis.call('ZREM', reg, id)
redis.call('DEL', BASE .. 'worker:' .. id, BASE .. 'cancel:' .. id)
for _, jid in ipairs(held) do redis.call('ZADD', K_ACTIVE, 0, jid) end
if #held > 0 then redis.call('DEL', K_STALLED) end
return #held
