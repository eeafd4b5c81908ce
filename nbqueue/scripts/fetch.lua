-- fetch: move up to `want` waiting jobs to active for one worker (BullMQ's moveToActive).
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 want, 5 worker token, 6 lock ms,
--   7 park ms: > 0 when the worker's BLPOP (on its hand-off list, the marker and its wake
--     key, for that long) follows in the same pipeline. With nothing to take, the worker is
--     registered as idle, so that a producer can hand it the next job directly (add.lua);
--     with jobs (or a limit, or a delayed job due before the BLPOP would time out), '0' is
--     pushed onto its hand-off list so the BLPOP returns at once.
--   8 '1' = unpark first: the worker may still be registered from an earlier park.
-- Returns the fetch reply (includes/fetch.lua), a handed-off job appended like the others.
-- @include common
-- @include fetch
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local reply = fetch_jobs(tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]))
park_or_unpark(ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], reply)  -- includes/fetch.lua
return reply
