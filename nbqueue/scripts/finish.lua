-- finish: record the outcome of a batch of attempts (BullMQ's moveToFinished), then fetch
-- the worker's next jobs in the same call so a steady drain costs one round trip per batch.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 want, 5 worker token, 6 lock ms,
--   7 '1' = unpark (see fetch.lua), 8 park ms: > 0 when the worker's BLPOP follows (as in
--   fetch.lua: a worker that expects to go idle parks with its finish, no fetch script of its
--   own), 9 n = number of stat pairs, then n x (field, increment),
--   then 10 per job: id, lock, kind, value, error type, retry delay ms, attempts made,
--   keep count (-1 = all), keep age ms (0 = no age limit), traceback ('' = none).
--   kind: c = completed, f = failed (no retry wanted), x = failed (attempts exhausted),
--         r = retry (to delayed when delay > 0, else back to wait).
--   A failed attempt's traceback is appended to the job's `st` field (a JSON list, the
--   newest MAX_TRACES kept). A retry of a job whose cancel was requested (`cx`, see
--   cancel.lua) fails it instead with error type 'cancelled'; such failures emit
--   `cancelled` besides `failed` (and the worker does not dead-letter them).
-- The `completed` event carries the return values of small results (field `rv`: a JSON
-- object job id -> value, for values up to RV_EVENT_MAX bytes, RV_EVENT_BUDGET in all; not
-- for jobs removed on completion: their result is dropped as before), so
-- a waiter that follows the stream (JobBatch, Job.result) needs no read of those jobs.
-- Returns {status per job (1 done, 2 done and its dependents were notified: a resolver
-- should run, see nbqueue/flows.py; 0 lock lost or job gone; -1 lock lost and the job
-- still active under no live worker's lock: its lock expired here, a stalled sweep should
-- run now)..., <fetch reply>}.
-- Also counts into the stats hash: completed, failed, retries and the per-minute history.
-- @include common
-- @include fetch
-- @include flows
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local nstats = tonumber(ARGV[9])
local first_job = 10 + 2 * nstats
local MAX_TRACES = 10
local RV_EVENT_MAX, RV_EVENT_BUDGET = 512, 8192
local rv_parts, rv_left = {}, RV_EVENT_BUDGET
local statuses = {}
local cancelled = {}
-- Whether Redis is full (used_memory >= maxmemory > 0), read once per call and only when a
-- traceback is to be stored. The rule (docs/reliability.md "Durability rules"): on a full
-- Redis a failure is still recorded (state, reason, error type, attempts: the writes this
-- script may make there) but its traceback is not stored, so that failing jobs cannot grow
-- memory past maxmemory by more than their small state fields. A user whose ACL forbids
-- INFO gets tracebacks stored as before.
local FULL = nil
local function memory_full()
  if FULL == nil then
    FULL = false
    local info = redis.pcall('INFO', 'memory')
    if type(info) == 'string' then
      local used = tonumber(string.match(info, 'used_memory:(%d+)'))
      local max = tonumber(string.match(info, '\nmaxmemory:(%d+)'))
      FULL = used ~= nil and max ~= nil and max > 0 and used >= max
    end
  end
  return FULL
end
-- Appends a failed attempt's traceback to the job's list (a corrupt list starts afresh).
local function add_trace(key, trace)
  if trace == '' or memory_full() then return end
  local list = {}
  local old = redis.call('HGET', key, 'st')
  if old then
    local ok, v = pcall(cjson.decode, old)
    if ok and type(v) == 'table' then list = v end
  end
  list[#list + 1] = trace
  while #list > MAX_TRACES do table.remove(list, 1) end
  redis.call('HSET', key, 'st', cjson.encode(list))
end
local done_ids, failed_ids, exhausted, retry_now, retry_later = {}, {}, {}, {}, {}
local zdone, zfailed, zdelayed, finished = {}, {}, {}, {}
local c_keep, c_age, f_keep, f_age = -1, 0, -1, 0
-- Validation before the first job write (see common.lua): read every job first (a key that
-- is not a hash is no job: its status is 0), then check the keys this call will write.
local held_of = {}
local to_check, any_retry = {[K_ACTIVE] = true}, false
for i = first_job, #ARGV, 10 do
  local kind, delay = ARGV[i + 2], tonumber(ARGV[i + 5])
  -- the lock, the deduplication id a finished job releases, whether its cancel was
  -- requested, what the wait time of a first attempt needs, and the jobs that depend on
  -- it (depends_on: they are notified in ZSET notify, see includes/flows.lua): one read
  local held = redis.pcall('HMGET', JOB .. ARGV[i], 'lk', 'dd', 'cx', 'ats', 'pon', 'ts', 'delay',
    'par', 'parg')
  if held.err then held = nil end
  held_of[i] = held
  if held and held[1] == ARGV[i + 1] then
    if held[2] then check_types(BASE .. 'de:' .. held[2], 'string') end
    if held[8] and kind ~= 'r' then to_check[K_NOTIFY] = true end
    if kind == 'c' then to_check[K_COMPLETED] = true
    elseif kind == 'r' and held[3] ~= '1' then
      any_retry = true
      if delay > 0 then to_check[K_DELAYED] = true else to_check[K_WAIT] = true end
    else to_check[K_FAILED] = true end
  end
end
for key in pairs(to_check) do check_types(key, 'zset') end
if any_retry then check_int(K_CTR) end

for i = first_job, #ARGV, 10 do
  local id, lock, kind, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local etype, delay, atm = ARGV[i + 4], tonumber(ARGV[i + 5]), ARGV[i + 6]
  local keep, age, trace = tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8]), ARGV[i + 9]
  local key = JOB .. id
  local held = held_of[i]
  if not held or held[1] ~= lock then
    statuses[#statuses + 1] = 0
    -- Refused (our lock was lost). If the job is still active under a lock of a worker that
    -- is not registered (gone, or a lock nobody holds), nobody runs it: its lock is expired
    -- now and the stalled-sweep guard dropped, so the caller's sweep frees it at once
    -- (status -1), not at lock expiry + the next sweep (issue 21 item 5).
    local other = held and held[1]
    if other and other ~= '' and redis.call('ZSCORE', K_ACTIVE, id) then
      local owner = string.match(other, '^(.*):%d+$')
      local live = owner and tonumber(redis.call('ZSCORE', BASE .. 'workers', owner))
      if not live or live < NOW then
        redis.call('ZADD', K_ACTIVE, 0, id)
        redis.call('DEL', K_STALLED)
        statuses[#statuses] = -1
      end
    end
  else
    if kind == 'r' and held[3] == '1' then
      kind, value, etype = 'f', 'cancelled', 'cancelled'
    end
    if kind ~= 'c' then add_trace(key, trace) end
    if kind ~= 'r' and held[2] then release_dedup(held[2], id) end
    statuses[#statuses + 1] = 1
    finished[#finished + 1] = id
    if held[8] and kind ~= 'r' then
      -- jobs wait for this one (depends_on): tell them, in this slot (includes/flows.lua)
      local what = 'f'
      if kind == 'c' then what = 'c' end
      notify_parents(held[8], held[9], id, what, value)
      -- a failed job keeps its parents: retrying it re-arms them (nbqueue/flows.py)
      if kind == 'c' then redis.call('HDEL', key, 'par', 'parg') end
      statuses[#statuses] = 2
    end
    if kind == 'c' then
      redis.call('HSET', key, 'state', 'completed', 'rv', value, 'fon', NOW, 'atm', atm, 'lk', '')
      done_ids[#done_ids + 1] = id
      if keep == 0 then release_files({id}); redis.call('DEL', key, logs_key(id), art_key(id))
      else
        zdone[#zdone + 1] = NOW; zdone[#zdone + 1] = id; c_keep = keep; c_age = age
        if #value <= RV_EVENT_MAX and #value < rv_left and value ~= '' then
          local part = cjson.encode(id) .. ':' .. value
          rv_parts[#rv_parts + 1] = part
          rv_left = rv_left - #part
        end
      end
    elseif kind == 'r' then
      redis.call('HSET', key, 'fr', value, 'et', etype, 'atm', atm, 'lk', '')
      if delay > 0 then
        redis.call('HSET', key, 'state', 'delayed')
        local seq = redis.call('INCR', K_CTR)
        zdelayed[#zdelayed + 1] = delayed_score(NOW + delay, seq); zdelayed[#zdelayed + 1] = id
        retry_later[#retry_later + 1] = id
      else
        retry_now[#retry_now + 1] = id
      end
    else
      redis.call('HSET', key, 'state', 'failed', 'fr', value, 'et', etype, 'fon', NOW,
        'atm', atm, 'lk', '')
      failed_ids[#failed_ids + 1] = id
      if kind == 'x' then exhausted[#exhausted + 1] = id end
      if etype == 'cancelled' then cancelled[#cancelled + 1] = id end
      if keep == 0 then release_files({id}); redis.call('DEL', key, logs_key(id), art_key(id))
      else zfailed[#zfailed + 1] = NOW; zfailed[#zfailed + 1] = id; f_keep = keep; f_age = age end
    end
  end
end
if #finished > 0 then zrem_many(K_ACTIVE, finished) end
if #zdone > 0 then redis.call('ZADD', K_COMPLETED, unpack(zdone)) end
if #zfailed > 0 then redis.call('ZADD', K_FAILED, unpack(zfailed)) end
if #zdelayed > 0 then redis.call('ZADD', K_DELAYED, unpack(zdelayed)) end
requeue(retry_now)

-- Running totals, then retention (which uses them to decide when to look at set sizes).
local done_total, failed_total = 0, 0
if #done_ids > 0 then done_total = redis.call('HINCRBY', K_STATS, 'completed', #done_ids) end
if #failed_ids > 0 then failed_total = redis.call('HINCRBY', K_STATS, 'failed', #failed_ids) end
if #zdone > 0 then trim_finished(K_COMPLETED, c_keep, c_age, done_total, #done_ids) end
if #zfailed > 0 then trim_finished(K_FAILED, f_keep, f_age, failed_total, #failed_ids) end
if #rv_parts > 0 then
  emit('completed', done_ids, {'rv', '{' .. table.concat(rv_parts, ',') .. '}'})
else
  emit('completed', done_ids)
end
emit('failed', failed_ids)
emit('cancelled', cancelled)
emit('retries-exhausted', exhausted)
emit('waiting', retry_now)
emit('delayed', retry_later)
if #retry_now > 0 then push_marker() end

-- Retries: attempts that failed and will run again (one command, only when there are).
if #retry_now + #retry_later > 0 then
  redis.call('HINCRBY', K_STATS, 'retries', #retry_now + #retry_later)
end

-- Worker counters, and the per-minute history (one small hash per minute, kept a day).
for i = 10, 9 + 2 * nstats, 2 do redis.call('HINCRBYFLOAT', K_STATS, ARGV[i], ARGV[i + 1]) end
if #done_ids + #failed_ids > 0 then
  local mkey = K_STATS .. ':m:' .. math.floor(NOW / 60000)
  local total = 0
  if #done_ids > 0 then total = total + redis.call('HINCRBY', mkey, 'completed', #done_ids) end
  if #failed_ids > 0 then total = total + redis.call('HINCRBY', mkey, 'failed', #failed_ids) end
  if total == #done_ids + #failed_ids then redis.call('PEXPIRE', mkey, 86400000) end
end

local fetched = fetch_jobs(tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]))
park_or_unpark(ARGV[5], ARGV[6], tonumber(ARGV[8]), ARGV[7], fetched)  -- includes/fetch.lua
for i = 1, #fetched do statuses[#statuses + 1] = fetched[i] end
return statuses
