-- add: add one or many jobs atomically; an existing job id is returned, not re-added.
-- KEYS: the twelve queue keys (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, then 6 per job:
--   id ('' = next counter value), name, data JSON, opts JSON, priority 1..5, delay ms.
-- Returns {id1, existed1 (0/1), id2, existed2, ...}.
-- @include common
local out, added, delayed = {}, {}, {}
for i = 4, #ARGV, 6 do
  local id, name, data, opts = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local prio, delay = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  local seq = redis.call('INCR', K_CTR)
  if id == '' then id = tostring(seq) end
  local key = JOB .. id
  if redis.call('EXISTS', key) == 1 then
    out[#out + 1] = id; out[#out + 1] = 1
  else
    local state = 'waiting'
    if delay > 0 then state = 'delayed' end
    redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', NOW, 'prio', prio,
      'delay', delay, 'seq', seq, 'atm', 0, 'state', state)
    if delay > 0 then
      redis.call('ZADD', K_DELAYED, delayed_score(NOW + delay, seq), id)
      delayed[#delayed + 1] = id
    else
      redis.call('ZADD', K_WAIT, wait_score(prio, seq), id)
    end
    added[#added + 1] = id
    out[#out + 1] = id; out[#out + 1] = 0
  end
end
if #added > 0 then
  emit('added', added)
  emit('delayed', delayed)
  push_marker()
end
return out
