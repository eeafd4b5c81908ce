-- clean: remove jobs of one state that are older than the grace period, in steps: at most
-- ARGV[6] removed and ARGV[7] looked at per call. The caller repeats the call
-- (ops.QueueOps.clean), so that no call keeps Redis busy for long whatever the size.
-- completed/failed are aged by finish time (their score); waiting/delayed by creation time
-- (the job's ts field), looked at from rank ARGV[8] on.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 state, 5 grace ms, 6 max removed this
--       call (>= 1), 7 max looked at this call, 8 rank to look from (waiting/delayed).
-- Returns {removed ids, next rank to look from (-1: the end of the set was reached)}.
-- @include common
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local state, cutoff, limit = ARGV[4], NOW - tonumber(ARGV[5]), tonumber(ARGV[6])
local scan, from = tonumber(ARGV[7]), tonumber(ARGV[8]) or 0
local sets = {completed = K_COMPLETED, failed = K_FAILED, waiting = K_WAIT, delayed = K_DELAYED}
local set = sets[state]
if not set then return redis.error_reply('ERR cannot clean state ' .. state) end
local removed = {}
local nxt = -1
if state == 'completed' or state == 'failed' then
  removed = redis.call('ZRANGEBYSCORE', set, '-inf', fmt(cutoff), 'LIMIT', 0, limit)
  if #removed == limit then nxt = 0 end
else
  local ids = redis.call('ZRANGE', set, from, from + scan - 1)
  local looked = 0
  for _, id in ipairs(ids) do
    if #removed >= limit then break end
    looked = looked + 1
    if tonumber(redis.call('HGET', JOB .. id, 'ts') or '0') <= cutoff then
      removed[#removed + 1] = id
    end
  end
  if #removed >= limit or #ids == scan then nxt = from + looked - #removed end
end
delete_jobs(removed)
zrem_many(set, removed)
if #removed > 0 then emit('cleaned', nil, {'count', tostring(#removed), 'state', state}) end
return {removed, nxt}
