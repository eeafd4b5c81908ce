-- extend_locks: renew the locks of all jobs a worker holds, in one call.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 lock ms, then pairs (id, lock).
-- Returns the ids whose lock is no longer this worker's (stalled and taken, or removed).
-- @include common
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local lost = {}
local until_ms = fmt(NOW + tonumber(ARGV[4]))
for i = 5, #ARGV, 2 do
  local id, lock = ARGV[i], ARGV[i + 1]
  -- pcall: a key that is not a hash is no job of ours (its id is reported lost); it must
  -- not stop the renewal of the others half-way
  if redis.pcall('HGET', JOB .. id, 'lk') == lock then
    redis.call('ZADD', K_ACTIVE, 'XX', until_ms, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
