-- stalled: find active jobs whose lock expired (their worker died or lost Redis) and move
-- them back to wait, or to failed once they stalled more than max_stalled times.
-- At most one sweep per interval runs, whichever worker gets the guard key first.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 max stalled count, 5 interval ms.
-- A job whose cancel was requested (cancel.lua) fails as 'cancelled' instead (not in the
-- failed ids: it is not dead-lettered).
-- A job that fails here and has dependents (depends_on: its 'par' field) notifies them in
-- this script, as finish.lua does (includes/flows.lua); the caller then delivers the
-- notifications (ops.QueueOps.check_stalled -> flows.resolve), so a parent fails at once,
-- not at the flows re-check.
-- Returns {{requeued ids}, {failed ids}, parents notified}.
-- @include common
-- @include flows
allow_oom()  -- must run on a full Redis (see includes/common.lua)
if not redis.call('SET', K_STALLED, NOW, 'PX', ARGV[5], 'NX') then return {{}, {}, 0} end
local max_stalled = tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', fmt(NOW), 'LIMIT', 0, 1000)
-- Validation before the first job write (see common.lua): read every expired job first;
-- numbers from its hash go through tonumber (a hand-edited stalled counter 'x' used to make
-- HINCRBY fail after the job had left the active set). A key that is not a hash is not a
-- job: its id just leaves the active set.
if #expired > 0 then check_types(K_WAIT, 'zset', K_FAILED, 'zset') end
local seen = {}
for i, id in ipairs(expired) do
  local f = redis.pcall('HMGET', JOB .. id, 'stc', 'cx', 'dd', 'atm', 'prio', 'seq', 'par', 'parg')
  if type(f) == 'table' and not f.err and redis.call('EXISTS', JOB .. id) == 1 then
    seen[i] = f
    if f[3] then check_types(BASE .. 'de:' .. f[3], 'string') end
    if f[7] then check_types(K_NOTIFY, 'zset') end
  end
end
local back, failed, zfailed, cancelled = {}, {}, {}, {}
local notified = 0
for i, id in ipairs(expired) do
  redis.call('ZREM', K_ACTIVE, id)
  local key = JOB .. id
  local f = seen[i]
  if f then
    local count = (tonumber(f[1]) or 0) + 1
    local atm = fmt((tonumber(f[4]) or 0) + 1)
    redis.call('HSET', key, 'lk', '', 'stc', fmt(count))
    if f[2] == '1' then  -- its cancel was requested
      redis.call('HSET', key, 'state', 'failed', 'fon', NOW, 'et', 'cancelled',
        'fr', 'cancelled', 'atm', atm)
      cancelled[#cancelled + 1] = id
      zfailed[#zfailed + 1] = NOW; zfailed[#zfailed + 1] = id
      -- 'par' stays: a retry re-arms the parents (nbqueue/flows.py)
      if f[7] then notified = notified + notify_parents(f[7], f[8], id, 'f', 'cancelled') end
    elseif count > max_stalled then
      redis.call('HSET', key, 'state', 'failed', 'fon', NOW, 'et', 'stalled',
        'fr', 'job stalled more than allowable limit', 'atm', atm)
      release_dedup(f[3], id)
      failed[#failed + 1] = id
      zfailed[#zfailed + 1] = NOW; zfailed[#zfailed + 1] = id
      if f[7] then
        notified = notified + notify_parents(f[7], f[8], id, 'f', 'job stalled more than allowable limit')
      end
    else
      -- back to the front of its level: its original sequence number
      redis.call('HSET', key, 'state', 'waiting')
      redis.call('ZADD', K_WAIT, wait_score(f[5] or 3, f[6] or 0), id)
      back[#back + 1] = id
    end
  end
end
if #zfailed > 0 then
  redis.call('ZADD', K_FAILED, unpack(zfailed))
  redis.pcall('HINCRBY', K_STATS, 'failed', #failed + #cancelled)
  if #failed > 0 then redis.pcall('HINCRBY', K_STATS, 'error:stalled', #failed) end
  -- the per-minute history counts these failures too (as finish.lua does its own)
  local mkey = K_STATS .. ':m:' .. math.floor(NOW / 60000)
  local nf = #failed + #cancelled
  if redis.pcall('HINCRBY', mkey, 'failed', nf) == nf then redis.pcall('PEXPIRE', mkey, 86400000) end
end
emit('stalled', back)
emit('waiting', back)
emit('failed', failed, {'reason', 'stalled'})
emit('failed', cancelled, {'reason', 'cancelled'})
emit('cancelled', cancelled)
if #back > 0 then push_marker() end
return {back, failed, notified}
