-- dep_due: the waiting jobs of THIS queue whose dependencies' registration is due for a
-- re-check (nbqueue.flows.upkeep re-runs dep_register for them: that recovers a crash
-- between add_dependent and dep_register, and dependencies removed without a notification
-- by drain, clean or obliterate). Their re-check time moves on by `recheck` ms; an entry
-- whose job is no longer waiting for children is dropped.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 limit, 5 re-check ms.
-- Returns {parent id, its generation ('arm', includes/flows.lua), n, then n x
--   ("<queue> <id>", seq) of its pending dependencies, ...}.
-- @include common
allow_oom()  -- keeps flows moving on a full Redis (see includes/common.lua)
local K_WCHILD = BASE .. 'waiting-children'
check_types(K_WCHILD, 'zset')  -- validation before the first write (see common.lua)
local due = redis.call('ZRANGEBYSCORE', K_WCHILD, '-inf', fmt(NOW), 'LIMIT', 0, tonumber(ARGV[4]))
-- read first: a job or deps key of the wrong type is left alone (not this script's to fix)
local states, gens, deps = {}, {}, {}
for i, pid in ipairs(due) do
  local st = redis.pcall('HMGET', JOB .. pid, 'state', 'arm')
  local d = redis.pcall('HGETALL', BASE .. 'deps:' .. pid)
  if st.err or type(d) == 'table' and d.err then
    states[i] = 'skip'
  else
    states[i], gens[i], deps[i] = st[1], tonumber(st[2]) or 0, d
  end
end
local out = {}
for i, pid in ipairs(due) do
  if states[i] == 'skip' then
    redis.call('ZADD', K_WCHILD, fmt(NOW + tonumber(ARGV[5])), pid)
  elseif states[i] ~= 'waiting-children' then
    redis.call('ZREM', K_WCHILD, pid)
    redis.call('DEL', BASE .. 'deps:' .. pid)
  else
    redis.call('ZADD', K_WCHILD, fmt(NOW + tonumber(ARGV[5])), pid)
    local all = deps[i]
    local pending = {}
    for i = 1, #all, 2 do
      if string.sub(all[i + 1], 1, 1) == 'p' then
        pending[#pending + 1] = all[i]; pending[#pending + 1] = string.sub(all[i + 1], 2)
      end
    end
    out[#out + 1] = pid
    out[#out + 1] = gens[i]
    out[#out + 1] = #pending / 2
    for i = 1, #pending do out[#out + 1] = pending[i] end
  end
end
return out
