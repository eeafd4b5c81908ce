-- add: add one or many jobs atomically; an existing job id is returned, not re-added.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, then 6 per job:
--   id ('' = next counter value), name, data JSON, opts JSON, priority 1..5, delay ms.
-- Returns {id1, existed1 (0/1), id2, existed2, ...}.
-- @include common
local n = (#ARGV - 3) / 6
-- One INCRBY reserves a sequence number for every job of the call.
local seq = redis.call('INCRBY', K_CTR, n) - n
local out, added, delayed, zwait, zdelayed = {}, {}, {}, {}, {}
for i = 4, #ARGV, 6 do
  seq = seq + 1
  local id, name, data, opts = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local prio, delay = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  local existed = false
  if id == '' then
    -- A fresh counter value cannot name an existing job: custom ids are never all digits.
    id = tostring(seq)
  else
    existed = redis.call('EXISTS', JOB .. id) == 1
  end
  if existed then
    out[#out + 1] = id; out[#out + 1] = 1
  else
    local key = JOB .. id
    -- attempts made and a zero delay are left out: absent means 0
    if delay > 0 then
      redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', NOW,
        'prio', prio, 'seq', seq, 'state', 'delayed', 'delay', delay)
      zdelayed[#zdelayed + 1] = delayed_score(NOW + delay, seq); zdelayed[#zdelayed + 1] = id
      delayed[#delayed + 1] = id
    else
      redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', NOW,
        'prio', prio, 'seq', seq, 'state', 'waiting')
      zwait[#zwait + 1] = wait_score(prio, seq); zwait[#zwait + 1] = id
    end
    added[#added + 1] = id
    out[#out + 1] = id; out[#out + 1] = 0
  end
end
for i = 1, #zwait, 1000 do
  redis.call('ZADD', K_WAIT, unpack(zwait, i, math.min(i + 999, #zwait)))
end
for i = 1, #zdelayed, 1000 do
  redis.call('ZADD', K_DELAYED, unpack(zdelayed, i, math.min(i + 999, #zdelayed)))
end
if #added > 0 then
  emit('added', added)
  emit('delayed', delayed)
  push_marker()
end
return out
