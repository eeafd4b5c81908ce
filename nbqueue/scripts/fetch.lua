-- fetch: move up to `want` waiting jobs to active for one worker (BullMQ's moveToActive).
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 want, 5 worker token, 6 lock ms,
--   7 park ms: > 0 when the worker's BLPOP (on its hand-off list, the marker and its wake
--     key, for that long) follows in the same pipeline. With nothing to take, the worker is
--     registered as idle, so that a producer can hand it the next job directly (add.lua);
--     with jobs (or a limit, or a delayed job due before the BLPOP would time out), '0' is
--     pushed onto its hand-off list so the BLPOP returns at once.
--   8 '1' = unpark first: the worker may still be registered from an earlier park. A park
--     (7 > 0) always unparks first: a job may have been handed to this worker by an add that
--     took a registration whose BLPOP had already returned; registering again on top of it
--     left a registration nobody blocks on, and the worker's stop then left it behind (the
--     next add handed its job to the stopped worker: run 30 s later, after lock expiry).
-- Returns the fetch reply (includes/fetch.lua), a handed-off job appended like the others.
-- @include common
-- @include fetch
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local token, lock_ms, park = ARGV[5], ARGV[6], tonumber(ARGV[7])
local reply = fetch_jobs(tonumber(ARGV[4]), token, tonumber(lock_ms))
if ARGV[8] == '1' or park > 0 then unpark(token, lock_ms, reply) end
if park > 0 then
  local member = token .. '|' .. lock_ms
  -- 10 ms of slack: the worker computed the BLPOP timeout from a slightly older reply
  -- pcall: after the fetch's writes, the registry must not stop the script (see unpark)
  if #reply > 2 or reply[2] > 0 or (reply[1] >= 0 and reply[1] + 10 < park) then
    redis.pcall('ZREM', K_IDLE, member)
    redis.pcall('RPUSH', BASE .. 'h:' .. token, '0')
  else
    redis.pcall('ZADD', K_IDLE, fmt(NOW + park + 1000), member)
  end
end
return reply
