-- clean: remove up to `limit` jobs of one state that are older than the grace period.
-- completed/failed are aged by finish time; waiting/delayed by creation time.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 state, 5 grace ms, 6 limit (0 = all).
-- Returns the removed ids.
-- @include common
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local state, cutoff, limit = ARGV[4], NOW - tonumber(ARGV[5]), tonumber(ARGV[6])
local sets = {completed = K_COMPLETED, failed = K_FAILED, waiting = K_WAIT, delayed = K_DELAYED}
local set = sets[state]
if not set then return redis.error_reply('ERR cannot clean state ' .. state) end
local removed = {}
if state == 'completed' or state == 'failed' then
  local args = {'ZRANGEBYSCORE', set, '-inf', fmt(cutoff)}
  if limit > 0 then args[5] = 'LIMIT'; args[6] = 0; args[7] = limit end
  removed = redis.call(unpack(args))
else
  local ids = redis.call('ZRANGE', set, 0, -1)
  for _, id in ipairs(ids) do
    if limit > 0 and #removed >= limit then break end
    if tonumber(redis.call('HGET', JOB .. id, 'ts') or '0') <= cutoff then
      removed[#removed + 1] = id
    end
  end
end
delete_jobs(removed)
zrem_many(set, removed)
emit('cleaned', nil, {'count', tostring(#removed), 'state', state})
return removed
