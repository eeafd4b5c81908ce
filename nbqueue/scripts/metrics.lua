-- metrics: read one queue's figures for a Prometheus scrape or `nbqueue stats` (writes
-- nothing; one call per queue, so a scrape costs O(queues) commands, not O(keys)).
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms ('' = the server's clock), 3 events maxlen (unused).
-- Returns {now ms, waiting, active, delayed, completed, failed, paused ('1' or ''),
--   schedulers, {waiting per priority 1..5}, {waiting since ms of the job next in line per
--   priority 1..5 (-1: none)}, {stats hash as a flat field/value list}, workers online
--   (registrations in BASE .. 'workers' that have not expired: see heartbeat.lua),
--   jobs waiting for their dependencies (waiting-children, see nbqueue/flows.py)}.
-- "Waiting since" is the job's add time plus its initial delay, of the job that has waited
-- longest at each level: the first FIFO job, or the last lifo job when that one is older.
-- @include common
local per_prio, since = {}, {}
local HALF = PRIO_SHIFT / 2
local function waiting_since(ids)
  if #ids == 0 then return nil end
  local f = redis.call('HMGET', JOB .. ids[1], 'ts', 'delay')
  local ts = tonumber(f[1])
  if ts then return ts + (tonumber(f[2]) or 0) end
  return nil
end
for p = 1, 5 do
  -- level p: FIFO jobs score p * 2^40 + seq, lifo jobs p * 2^40 - seq (seq < 2^39)
  local mid = p * PRIO_SHIFT
  local lo, hi = fmt(mid - HALF), '(' .. fmt(mid + HALF)
  per_prio[p] = redis.call('ZCOUNT', K_WAIT, lo, hi)
  since[p] = -1
  if per_prio[p] > 0 then
    -- the oldest FIFO job is the first above mid; the oldest lifo job the last below it
    local a = waiting_since(redis.call('ZRANGEBYSCORE', K_WAIT, fmt(mid), hi, 'LIMIT', 0, 1))
    local b = waiting_since(redis.call('ZREVRANGEBYSCORE', K_WAIT, '(' .. fmt(mid), lo,
      'LIMIT', 0, 1))
    if a and b then since[p] = math.min(a, b) else since[p] = a or b or -1 end
  end
end
return {NOW, redis.call('ZCARD', K_WAIT), redis.call('ZCARD', K_ACTIVE),
  redis.call('ZCARD', K_DELAYED), redis.call('ZCARD', K_COMPLETED),
  redis.call('ZCARD', K_FAILED), redis.call('HGET', K_META, 'paused') or '',
  redis.call('ZCARD', BASE .. 'schedulers'), per_prio, since,
  redis.call('HGETALL', K_STATS), redis.call('ZCOUNT', BASE .. 'workers', fmt(NOW), '+inf'),
  redis.call('ZCARD', BASE .. 'waiting-children')}
