-- add: add one or many jobs atomically; an existing job id is returned, not re-added.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, then 6 per job:
--   id ('' = next counter value), name, data JSON, opts JSON, priority 1..5, delay ms.
-- Returns {s, i1, i2, ...}: job k of the call (1-based) got sequence number s + k, which is
-- also its id when it had none; i1, i2... are the jobs whose given id already existed
-- (a short reply: a bulk add of fresh jobs answers with one number).
-- @include common
local n = (#ARGV - 3) / 6
-- One INCRBY reserves a sequence number for every job of the call.
local seq0 = redis.call('INCRBY', K_CTR, n) - n
local out, added, delayed, zwait, zdelayed = {seq0}, {}, {}, {}, {}
-- Numbers passed to redis.call are formatted by Redis: hand it strings made once instead.
local now_s = fmt(NOW)
local prio_base = {}
for k = 1, n do
  local i = 4 + (k - 1) * 6
  local seq = seq0 + k
  local sid = fmt(seq)
  local id, name, data, opts, prio = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local delay = tonumber(ARGV[i + 5])
  local existed = false
  if id == '' then
    -- A fresh counter value cannot name an existing job: custom ids are never all digits.
    id = sid
  else
    existed = redis.call('EXISTS', JOB .. id) == 1
  end
  if existed then
    out[#out + 1] = k
  else
    local key = JOB .. id
    -- attempts made and a zero delay are left out: absent means 0
    if delay > 0 then
      redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', now_s,
        'prio', prio, 'seq', sid, 'state', 'delayed', 'delay', ARGV[i + 5])
      zdelayed[#zdelayed + 1] = delayed_score(NOW + delay, seq); zdelayed[#zdelayed + 1] = id
      delayed[#delayed + 1] = id
    else
      redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', now_s,
        'prio', prio, 'seq', sid, 'state', 'waiting')
      local base = prio_base[prio]
      if not base then
        base = (tonumber(prio) or 3) * PRIO_SHIFT
        prio_base[prio] = base
      end
      zwait[#zwait + 1] = fmt(base + seq); zwait[#zwait + 1] = id
    end
    added[#added + 1] = id
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
