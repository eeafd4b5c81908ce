-- dep_rearm: re-arm failed jobs of THIS queue, the parents of jobs that were just retried
-- (retry_failed.lua returns them; nbqueue.flows.after_retry calls this in their slot).
-- Each one that failed with dependency_failed and still holds 'dl' goes back to
-- waiting-children with every dependency pending again (includes/flows.lua); any other job is left as it is (a job cancelled while it
-- waited is re-armed by its own retry only). Idempotent.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, then the job ids.
-- Returns {jobs re-armed, {"<queue> <id>" of their own parents (re-armed in turn)}}.
-- @include common
-- @include flows
allow_oom()  -- like retry_failed (see includes/common.lua)
-- validation before the first write (see common.lua)
check_types(K_FAILED, 'zset', K_NOTIFY, 'zset')
check_int(K_CTR)  -- numbers the new generations (includes/flows.lua)
local armed, parents, seen_parent, ids = {}, {}, {}, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local f = redis.pcall('HMGET', JOB .. id, 'state', 'dl', 'par', 'et')
  if type(f) == 'table' and not f.err and f[1] == 'failed' and f[4] == 'dependency_failed' and redis.call('ZSCORE', K_FAILED, id) then
    local flat = rearm_plan(id, f[2])
    if flat then
      armed[#armed + 1] = {id, flat}
      if f[3] then collect_parents(f[3], parents, seen_parent) end
    end
  end
end
for _, a in ipairs(armed) do
  rearm(a[1], a[2])
  ids[#ids + 1] = a[1]
end
local set = {}
for _, id in ipairs(ids) do set[id] = true end
drop_notifications(set)
emit('waiting-children', ids)
return {#ids, parents}
