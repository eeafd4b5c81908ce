-- heartbeat: register a worker in its queue's worker registry, or renew it (one call per
-- worker per interval, never per job), or take it out (deregister).
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 worker id, 5 ttl ms (a worker that stops
--   heartbeating drops out after this long), 6 info JSON {host, pid, mode, concurrency},
--   7 active jobs now, 8 '1' = deregister.
-- Keys: BASE .. 'workers' (ZSET worker id -> registration expiry ms) and
--   BASE .. 'worker:' .. id (HASH info, started, hb, active; expires with the registration).
-- Returns the registration's expiry (server ms), 0 when deregistered.
-- @include common
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local id, ttl = ARGV[4], tonumber(ARGV[5])
if id == '' or not ttl or ttl <= 0 then
  return redis.error_reply('ERR nbqueue heartbeat: a worker id and a ttl > 0 are needed')
end
local reg, wkey = BASE .. 'workers', BASE .. 'worker:' .. id
if ARGV[8] == '1' then
  redis.call('ZREM', reg, id)
  redis.call('DEL', wkey)
  return 0
end
-- registrations that expired (their workers died): gone from the index too
redis.call('ZREMRANGEBYSCORE', reg, '-inf', '(' .. fmt(NOW))
local until_ms = fmt(NOW + ttl)
if redis.call('EXISTS', wkey) == 0 then redis.call('HSET', wkey, 'started', fmt(NOW)) end
redis.call('HSET', wkey, 'info', ARGV[6], 'hb', fmt(NOW), 'active', ARGV[7])
redis.call('PEXPIRE', wkey, ttl)
redis.call('ZADD', reg, until_ms, id)
return until_ms
