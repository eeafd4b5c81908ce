-- drain: remove waiting jobs (and the delayed ones when asked), at most ARGV[5] per call;
-- active jobs run on. The caller repeats the call until it says "done" (ops.QueueOps.drain),
-- so that no call keeps Redis busy for long whatever the queue's size (like add_bulk).
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 '1' to drain delayed jobs too,
--       5 max jobs this call, 6 jobs removed by the earlier calls of this drain.
-- Returns {removed by this call, 1 when done (nothing left) else 0}. The last call emits
-- one 'drained' event with the total, unless the queue has no events stream and nothing
-- was removed: draining a queue that never existed writes no key.
-- @include common
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local budget = tonumber(ARGV[5])
local before = tonumber(ARGV[6]) or 0
local removed = 0
local sets = {K_WAIT}
if ARGV[4] == '1' then sets[2] = K_DELAYED end
for _, set in ipairs(sets) do
  if removed < budget then removed = removed + delete_set(set, budget - removed) end
end
local done = 1
for _, set in ipairs(sets) do
  if redis.call('ZCARD', set) > 0 then done = 0 end
end
local total = before + removed
if done == 1 and (total > 0 or redis.call('EXISTS', K_EVENTS) == 1) then
  emit('drained', nil, {'removed', tostring(total)})
end
return {removed, done}
