-- Job dependencies (depends_on), shared by the scripts that end jobs. See nbqueue/flows.py
-- for the protocol. A job with dependents ("parents") carries 'par': a JSON array of
-- "<parent queue> <parent id>" (queue names hold no whitespace). When it ends, each parent
-- gets a notification in THIS queue's slot (ZSET notify, member = JSON
-- [parent queue, parent id, this queue, this id, kind, value, generation]); a resolver later
-- moves it to the parent's slot (dep_resolve.lua). kind: c completed (value = result JSON),
-- f failed (value = reason), m gone (value = reason).
--
-- Generations: a parent's 'arm' field names its current arming: its sequence number when
-- it is added (add_dependent.lua), a fresh number of the queue's counter at each re-arm
-- (rearm below), so a later arming always has a greater one (absent, for a job added
-- before generations: 0). Its dependencies learn it when they register the parent
-- (dep_register.lua keeps it in their 'parg' field, a JSON object {"<parent queue> <parent
-- id>": generation}, and never lowers it: a registration that arrives after a newer one is
-- stale) and each notification carries it; dep_resolve.lua delivers only a notification of
-- the parent's current generation. A notification of an earlier arming -- a failure a
-- resolver read before the failed dependency was retried and the parent re-armed, and
-- delivered after -- is stale news and changes nothing; the re-arm's registration tells
-- the parent everything again, in the new generation. It also keeps a new notification a
-- member of its own: a resolver that read the old text and removes it after delivering
-- cannot take the new one with it.
local K_NOTIFY = BASE .. 'notify'
local QNAME = string.match(BASE, '{(.*)}') or BASE


-- Queue one notification for parent `pq` `pid` (of its generation `gen`): job `id` of
-- this queue ended. (Generations travel as digit strings: cjson writes numbers with 14
-- significant digits.)
local function queue_notification(pq, pid, id, kind, value, gen)
  redis.call('ZADD', K_NOTIFY, fmt(NOW),
    cjson.encode({pq, pid, QNAME, id, kind, value, fmt(gen)}))
end

-- Queue a notification of job `id`'s end for each parent in `par` (its 'par' field), of
-- the generation `parg` (its 'parg' field, read with 'par'; nil: none) holds for it.
-- Returns how many were queued (a malformed field queues none).
local function notify_parents(par, parg, id, kind, value)
  local ok, parents = pcall(cjson.decode, par)
  if not ok or type(parents) ~= 'table' then return 0 end
  local okg, gens = pcall(cjson.decode, parg or '{}')
  if not okg or type(gens) ~= 'table' then gens = nil end
  local n = 0
  for _, p in ipairs(parents) do
    local pq, pid = string.match(tostring(p), '^(%S+) (.+)$')
    if pq then
      queue_notification(pq, pid, id, kind, value, gens and tonumber(gens[p]) or 0)
      n = n + 1
    end
  end
  return n
end

-- Re-arm (DESIGN "Fan-in is never partial"; nbqueue/flows.py "Retries re-arm"). A failed
-- job that still holds 'dl' -- its dependency list (JSON, flat: "<queue> <id>", seq, ...),
-- written by add_dependent.lua and dropped when its dependencies release it -- never ran
-- with its dependencies' results: it failed on one of them (dependency_failed) or was
-- cancelled while it waited. A retry puts it back to waiting-children with EVERY dependency
-- pending again (a fresh deps hash, dpend = their number) and its re-check due at once:
-- dep_due (run by the retrying process right after, else by any worker's upkeep)
-- re-registers the dependencies; the completed ones notify it again with their current
-- results, one that is still failed (or gone) fails it again. It never runs with a part.
local K_WCHILD = BASE .. 'waiting-children'

-- Read phase: job `id`'s dependency list from its 'dl' field, or nil (not re-armable).
-- Checks the keys rearm() writes (validation before the first write, see common.lua).
local function rearm_plan(id, dl)
  if not dl then return nil end
  local ok, flat = pcall(cjson.decode, dl)
  if not ok or type(flat) ~= 'table' or #flat < 2 or #flat % 2 ~= 0 then return nil end
  for i = 1, #flat do
    if type(flat[i]) ~= 'string' then return nil end
  end
  check_types(BASE .. 'deps:' .. id, 'hash', K_WCHILD, 'zset')
  return flat
end

-- HASH `dkey` (deps:<id>) from a flat dependency list ("<queue> <id>", seq, ...) read from
-- index `first` on: every dependency pending ("p" .. seq). One HSET per 500 dependencies
-- (Lua's unpack has a stack limit). Written by add_dependent and by rearm below.
local function write_deps(dkey, flat, first)
  for i = first, #flat, 1000 do
    local part = {}
    for j = i, math.min(i + 999, #flat), 2 do
      part[#part + 1] = flat[j]; part[#part + 1] = 'p' .. flat[j + 1]
    end
    redis.call('HSET', dkey, unpack(part))
  end
end

-- Write phase: failed job `id` back to waiting-children (attempts reset, as any retry),
-- in a new generation (see above: news of the earlier arming no longer counts). Callers
-- check K_CTR before their first write (check_int).
local function rearm(id, flat)
  local dkey = BASE .. 'deps:' .. id
  redis.call('DEL', dkey)
  write_deps(dkey, flat, 1)
  local gen = redis.call('INCR', K_CTR)
  redis.call('HSET', JOB .. id, 'state', 'waiting-children', 'dpend', fmt(#flat / 2),
    'atm', 0, 'stc', 0, 'fr', '', 'et', '', 'fon', '', 'rv', '', 'cx', '', 'arm', fmt(gen))
  redis.call('HDEL', JOB .. id, 'dres')
  redis.call('ZREM', K_FAILED, id)
  redis.call('ZADD', K_WCHILD, fmt(NOW), id)
end

-- The parents ("<queue> <id>") in a job's 'par' field, added to `out` once each (`seen`).
local function collect_parents(par, out, seen)
  local ok, parents = pcall(cjson.decode, par)
  if not ok or type(parents) ~= 'table' then return end
  for _, p in ipairs(parents) do
    p = tostring(p)
    if not seen[p] then seen[p] = true; out[#out + 1] = p end
  end
end

-- Drop the notifications still queued (not yet delivered) about the end of the jobs in
-- `ids` (a set): they are being retried, so their parents hear of the new run instead of a
-- stale failure. Callers check K_NOTIFY's type before their first write.
local function drop_notifications(ids)
  if not next(ids) or redis.call('ZCARD', K_NOTIFY) == 0 then return end
  local stale = {}
  for _, entry in ipairs(redis.call('ZRANGE', K_NOTIFY, 0, -1)) do
    local ok, n = pcall(cjson.decode, entry)
    if ok and type(n) == 'table' and n[3] == QNAME and ids[tostring(n[4])] then
      stale[#stale + 1] = entry
    end
  end
  if #stale > 0 then zrem_many(K_NOTIFY, stale) end
end
