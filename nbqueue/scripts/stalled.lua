-- stalled: find active jobs whose lock expired (their worker died or lost Redis) and move
-- them back to wait, or to failed once they stalled more than max_stalled times.
-- At most one sweep per interval runs, whichever worker gets the guard key first.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 max stalled count, 5 interval ms.
-- A job whose cancel was requested (cancel.lua) fails as 'cancelled' instead (not in the
-- failed ids: it is not dead-lettered).
-- Returns {{requeued ids}, {failed ids}}.
-- @include common
allow_oom()  -- must run on a full Redis (see includes/common.lua)
if not redis.call('SET', K_STALLED, NOW, 'PX', ARGV[5], 'NX') then return {{}, {}} end
local max_stalled = tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', fmt(NOW), 'LIMIT', 0, 1000)
local back, failed, zfailed, cancelled = {}, {}, {}, {}
for _, id in ipairs(expired) do
  redis.call('ZREM', K_ACTIVE, id)
  local key = JOB .. id
  if redis.call('EXISTS', key) == 1 then
    local count = redis.call('HINCRBY', key, 'stc', 1)
    redis.call('HSET', key, 'lk', '')
    local cancel = redis.call('HGET', key, 'cx') == '1'  -- its cancel was requested
    if cancel then
      redis.call('HSET', key, 'state', 'failed', 'fon', NOW, 'et', 'cancelled',
        'fr', 'cancelled')
      redis.call('HINCRBY', key, 'atm', 1)
      cancelled[#cancelled + 1] = id
      zfailed[#zfailed + 1] = NOW; zfailed[#zfailed + 1] = id
    elseif count > max_stalled then
      redis.call('HSET', key, 'state', 'failed', 'fon', NOW, 'et', 'stalled',
        'fr', 'job stalled more than allowable limit')
      release_dedup(redis.call('HGET', key, 'dd'), id)
      redis.call('HINCRBY', key, 'atm', 1)
      failed[#failed + 1] = id
      zfailed[#zfailed + 1] = NOW; zfailed[#zfailed + 1] = id
    else
      -- back to the front of its level: its original sequence number
      local f = redis.call('HMGET', key, 'prio', 'seq')
      redis.call('HSET', key, 'state', 'waiting')
      redis.call('ZADD', K_WAIT, wait_score(f[1] or 3, f[2] or 0), id)
      back[#back + 1] = id
    end
  end
end
if #zfailed > 0 then
  redis.call('ZADD', K_FAILED, unpack(zfailed))
  redis.call('HINCRBY', K_STATS, 'failed', #failed + #cancelled)
  if #failed > 0 then redis.call('HINCRBY', K_STATS, 'error:stalled', #failed) end
  -- the per-minute history counts these failures too (as finish.lua does its own)
  local mkey = K_STATS .. ':m:' .. math.floor(NOW / 60000)
  local nf = #failed + #cancelled
  if redis.call('HINCRBY', mkey, 'failed', nf) == nf then redis.call('PEXPIRE', mkey, 86400000) end
end
emit('stalled', back)
emit('waiting', back)
emit('failed', failed, {'reason', 'stalled'})
emit('failed', cancelled, {'reason', 'cancelled'})
emit('cancelled', cancelled)
if #back > 0 then push_marker() end
return {back, failed}
