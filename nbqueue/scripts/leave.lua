-- leave: a stopping worker that may be parked leaves the idle registry, takes the jobs a
-- producer handed it meanwhile (add.lua), and ends its own pending BLPOP (its wake key), in
-- one call that must work on a full Redis: a plain RPUSH of the wake key is refused there,
-- and a worker that could not wake itself used to stay registered, so the next add handed
-- its job to a stopped worker (run only after lock expiry and the stalled sweep).
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 worker token, 5 lock ms,
--   6 '1' = also push onto the wake key (a BLPOP is pending).
-- Returns a fetch reply (includes/fetch.lua) holding only the handed-over jobs.
-- @include common
-- @include fetch
allow_oom()  -- must run on a full Redis (see includes/common.lua); it frees the registry
local token = ARGV[4]
local reply = {-1, 0}
unpark(token, ARGV[5], reply)
if ARGV[6] == '1' then redis.call('RPUSH', BASE .. 'wake:' .. token, 'stop') end
return reply
