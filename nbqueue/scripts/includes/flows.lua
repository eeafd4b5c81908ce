-- Job dependencies (depends_on), shared by the scripts that end jobs. See nbqueue/flows.py
-- for the protocol. A job with dependents ("parents") carries 'par': a JSON array of
-- "<parent queue> <parent id>" (queue names hold no whitespace). When it ends, each parent
-- gets a notification in THIS queue's slot (ZSET notify, member = JSON
-- [parent queue, parent id, this queue, this id, kind, value]); a resolver later moves it
-- to the parent's slot (dep_resolve.lua). kind: c completed (value = result JSON),
-- f failed (value = reason), m gone (value = reason).
local K_NOTIFY = BASE .. 'notify'
local QNAME = string.match(BASE, '{(.*)}') or BASE

-- Queue a notification of job `id`'s end for each parent in `par` (its 'par' field).
-- Returns how many were queued (a malformed field queues none).
local function notify_parents(par, id, kind, value)
  local ok, parents = pcall(cjson.decode, par)
  if not ok or type(parents) ~= 'table' then return 0 end
  local n = 0
  for _, p in ipairs(parents) do
    local pq, pid = string.match(tostring(p), '^(%S+) (.+)$')
    if pq then
      redis.call('ZADD', K_NOTIFY, fmt(NOW), cjson.encode({pq, pid, QNAME, id, kind, value}))
      n = n + 1
    end
  end
  return n
end
