-- retry_failed: move failed jobs back to wait (attempts reset), oldest first.
-- A failed job that never got its dependencies' results (it holds 'dl': it failed with
-- dependency_failed, or was cancelled while it waited) is re-armed instead: back to
-- waiting-children with every dependency pending again (includes/flows.lua), never to wait.
-- Notifications about the retried jobs' previous end that are still queued (not delivered)
-- are dropped: their parents hear of the new run instead.
-- ops.QueueOps.retry_failed sends at most ops.SWEEP_CHUNK_JOBS as the limit and repeats the
-- call, so that no call keeps Redis busy for long whatever the number of failed jobs.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 limit (0 = all), 5 job id ('' = any).
-- Returns {jobs moved (re-armed ones included), jobs re-armed, {"<queue> <id>" of the
-- retried jobs' parents}}: nbqueue.flows.after_retry then registers the re-armed jobs'
-- dependencies (dep_due) and re-arms those parents in their own slots (dep_rearm.lua).
-- @include common
-- @include flows
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local limit, only = tonumber(ARGV[4]), ARGV[5]
local moved, narmed = 0, 0
local parents, seen_parent, with_parents = {}, {}, {}
while true do
  local ids
  if only ~= '' then
    ids = {}
    if redis.call('ZSCORE', K_FAILED, only) then ids[1] = only end
  else
    local n = 999
    if limit > 0 then n = math.min(999, limit - moved - 1) end
    if n < 0 then break end
    ids = redis.call('ZRANGE', K_FAILED, 0, n)
  end
  if #ids == 0 then break end
  -- validation before the first write (see common.lua); ids whose key is not a hash are no
  -- jobs: they only leave the failed set
  check_types(K_WAIT, 'zset', K_NOTIFY, 'zset')
  check_int(K_CTR)
  local plain, armed = {}, {}
  for _, id in ipairs(ids) do
    local f = redis.pcall('HMGET', JOB .. id, 'dl', 'par')
    local flat = nil
    if type(f) == 'table' and not f.err then
      flat = rearm_plan(id, f[1])
      if f[2] then
        collect_parents(f[2], parents, seen_parent)
        with_parents[id] = true
      end
    end
    if flat then armed[#armed + 1] = {id, flat} else plain[#plain + 1] = id end
  end
  zrem_many(K_FAILED, plain)
  for _, id in ipairs(plain) do
    redis.pcall('HSET', JOB .. id, 'atm', 0, 'stc', 0, 'fr', '', 'et', '', 'fon', '', 'rv', '',
      'cx', '')
  end
  requeue(plain)
  emit('waiting', plain)
  local armed_ids = {}
  for _, a in ipairs(armed) do
    rearm(a[1], a[2])
    armed_ids[#armed_ids + 1] = a[1]
  end
  emit('waiting-children', armed_ids)
  if #plain > 0 then push_marker() end
  moved = moved + #ids
  narmed = narmed + #armed
  if only ~= '' then break end
end
drop_notifications(with_parents)
return {moved, narmed, parents}
