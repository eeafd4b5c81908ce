-- fetch: move up to `want` waiting jobs to active for one worker (BullMQ's moveToActive).
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 want, 5 worker token, 6 lock ms.
-- @include common
-- @include fetch
return fetch_jobs(tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]))
