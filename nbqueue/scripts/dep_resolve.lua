-- dep_resolve: deliver dependency-end notifications to their parents in THIS queue (the
-- second step of the protocol in nbqueue/flows.py). Idempotent: a notification already
-- delivered (its dependency no longer pending) or for a parent that is gone changes nothing,
-- so the resolver may run it again after a crash before it removed the notifications.
-- A parent whose last pending dependency ended goes to wait (or delayed, for its delay);
-- one whose dependency failed or is gone fails with error type dependency_failed (policy
-- 'fail'), or counts it as ended (policy 'ignore'). A parent that fails notifies its own
-- parents (in this slot: includes/flows.lua) and keeps its dependency list ('dl') and its
-- parents ('par'): a retry re-arms it, and them (includes/flows.lua, nbqueue/flows.py).
-- A released parent drops 'dl'.
-- KEYS: 1 this (the parents') queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen,
--   then 5 per notification: parent id, "<queue> <id>" of the dependency, kind (c|f|m), value,
--   the parent's generation it was queued for (one of an earlier arming is stale: ignored,
--   see includes/flows.lua).
-- Returns {{released ids}, {failed ids}, notifications queued for grandparents}.
-- @include common
-- @include flows
allow_oom()  -- keeps flows moving on a full Redis (see includes/common.lua)
local released, delayed_ids, failed = {}, {}, {}
local queued = 0

-- The results of the completed dependencies, as a JSON object {"queue:id": result}.
local function results_json(dkey)
  local all = redis.call('HGETALL', dkey)
  local parts = {}
  for i = 1, #all, 2 do
    local v = all[i + 1]
    if string.sub(v, 1, 1) == 'c' then
      local ref = string.gsub(all[i], ' ', ':', 1)
      parts[#parts + 1] = cjson.encode(ref) .. ':' .. string.sub(v, 2)
    end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- Validation before the first write (see common.lua): the sets and counters this call may
-- write, and each parent's hash, deps hash and pending count.
check_types(K_WCHILD, 'zset', K_WAIT, 'zset', K_DELAYED, 'zset', K_FAILED, 'zset',
  K_NOTIFY, 'zset', K_STATS, 'hash')
check_int(K_CTR)
for i = 4, #ARGV, 5 do
  local key, dkey = JOB .. ARGV[i], BASE .. 'deps:' .. ARGV[i]
  check_types(key, 'hash', dkey, 'hash')
  local pend = redis.call('HGET', key, 'dpend')
  if pend and not tonumber(pend) then
    error('nbqueue: job ' .. ARGV[i] .. ' has a corrupt dpend ' .. pend .. '; nothing was changed')
  end
end
for i = 4, #ARGV, 5 do
  local pid, ref, kind, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = JOB .. pid
  local dkey = BASE .. 'deps:' .. pid
  local f = redis.call('HMGET', key, 'state', 'dpol', 'prio', 'seq', 'delay', 'par', 'arm', 'parg')
  local cur = redis.call('HGET', dkey, ref)
  local current = (tonumber(ARGV[i + 4]) or 0) == (tonumber(f[7]) or 0)
  if current and f[1] == 'waiting-children' and cur and string.sub(cur, 1, 1) == 'p' then
    redis.call('HSET', dkey, ref, kind .. value)
    if kind ~= 'c' and f[2] ~= 'ignore' then
      local what = ' failed: '
      if kind == 'm' then what = ': ' end
      local reason = 'dependency ' .. string.gsub(ref, ' ', ':', 1) .. what .. value
      redis.call('HSET', key, 'state', 'failed', 'fr', reason, 'et', 'dependency_failed',
        'fon', fmt(NOW), 'dres', results_json(dkey))
      redis.call('HDEL', key, 'dpend')
      redis.call('DEL', dkey)
      redis.call('ZREM', K_WCHILD, pid)
      redis.call('ZADD', K_FAILED, fmt(NOW), pid)
      failed[#failed + 1] = pid
      if f[6] then queued = queued + notify_parents(f[6], f[8], pid, 'f', reason) end
    elseif redis.call('HINCRBY', key, 'dpend', -1) <= 0 then
      redis.call('HSET', key, 'dres', results_json(dkey))
      redis.call('HDEL', key, 'dpend', 'dl')
      redis.call('DEL', dkey)
      redis.call('ZREM', K_WCHILD, pid)
      local delay = tonumber(f[5]) or 0
      if delay > 0 then
        local seq = redis.call('INCR', K_CTR)
        redis.call('HSET', key, 'state', 'delayed')
        redis.call('ZADD', K_DELAYED, delayed_score(NOW + delay, seq), pid)
        delayed_ids[#delayed_ids + 1] = pid
      else
        redis.call('HSET', key, 'state', 'waiting')
        redis.call('ZADD', K_WAIT, wait_score(f[3], f[4]), pid)
        released[#released + 1] = pid
      end
    end
  end
end
if #failed > 0 then
  redis.pcall('HINCRBY', K_STATS, 'failed', #failed)
  redis.pcall('HINCRBY', K_STATS, 'error:dependency_failed', #failed)
  local mkey = K_STATS .. ':m:' .. math.floor(NOW / 60000)
  if redis.pcall('HINCRBY', mkey, 'failed', #failed) == #failed then
    redis.pcall('PEXPIRE', mkey, 86400000)
  end
end
emit('waiting', released)
emit('delayed', delayed_ids)
emit('failed', failed, {'reason', 'dependency_failed'})
if #released > 0 then push_marker() end
for i = 1, #delayed_ids do released[#released + 1] = delayed_ids[i] end
return {released, failed, queued}
