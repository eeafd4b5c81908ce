-- add: add one or many jobs atomically; an existing job id is returned, not re-added.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 idempotency token of this call ('' =
--   none), then, space-separated, the tokens of earlier calls of this process whose replies
--   it has (acknowledged: deleted here, see below), 5 how long the token is remembered
--   (ms), then 7 per job:
--   id ('' = next counter value), name, data JSON, opts JSON, priority 1..5, delay ms,
--   ext: '' or a JSON object of the options that need this script's attention:
--     lifo = 1 (first within its priority level: wait score priority * 2^40 - seq),
--     dd = [id, ttl ms (0 = until the job finishes), extend 0|1, replace 0|1]
--       (deduplication: key BASE .. 'de:' .. id holds the id of the job it points to),
--     art = nonce: the job's artifacts were staged under BASE .. 'stage:' .. nonce (with a
--       ttl; nbqueue/dataplane.py); a job created here adopts them as its art:<id> hash,
--       a job not created (existing id, deduplicated) drops them.
-- Returns {s, t, e, i1, i2, ...}: job k of the call (1-based) got sequence number s + k, which
-- is also its id when it had none (s is then "<s>/<label>" when the queue's fresh ids carry
-- a label, see includes/ids.lua: the id is s + k .. label); t is the server time (ms) the
-- jobs were stamped with; e is the id of the first event entry this call wrote ('' = none):
-- every event of the call's fresh jobs is at or after it, so a waiter reads the stream from
-- there (no read of the stream's end, no first look at the jobs);
-- i1, i2... are the jobs whose given id already existed (a short reply: a bulk add of fresh
-- jobs answers with two numbers); a deduplicated job k appears as the pair -k, <id of the
-- existing job it was deduplicated against>, and a job whose fresh id's key is held by a
-- foreign value (hand-made; that job was not added) as the pair -k, ''.
-- Exactly-once: the reply is kept under add:<token> for ARGV[5] ms; the same call again (a
-- client re-sending after a socket timeout or a reconnect) gets that reply and writes nothing.
-- Token memory is bounded (docs/reliability.md "Durability rules"): a process's next add to
-- the queue deletes the tokens whose replies it received (ARGV[4] after the first word), so
-- Redis holds about one token per (process, queue) plus the calls in flight or whose reply
-- was lost (those expire after ARGV[5] ms), whatever the add rate.
-- @include common
-- @include ids
local TOKEN, ACKED = string.match(ARGV[4], '^(%S*)%s*(.*)$')
local TOKEN_KEY = nil
if TOKEN ~= '' then
  TOKEN_KEY = BASE .. 'add:' .. TOKEN
  local seen = redis.call('GET', TOKEN_KEY)
  if seen then return cjson.decode(seen) end
end
local STRIDE, ARG0 = 7, 5  -- ARG0: the ARGV index before the first job's fields
local n = (#ARGV - ARG0) / STRIDE
if n < 1 or n ~= math.floor(n) then
  return redis.error_reply('ERR nbqueue add: ' .. (#ARGV - ARG0) .. ' job arguments, not a multiple of 7')
end
-- Validate every job's extension before the first write (an error after a write would leave
-- the earlier writes applied). Plain jobs ('') cost one comparison each.
local exts
for k = 1, n do
  local e = ARGV[ARG0 + k * STRIDE]
  if e ~= '' then
    local ok, x = pcall(cjson.decode, e)
    local dd = ok and type(x) == 'table' and x.dd
    if not ok or type(x) ~= 'table' or (dd ~= nil and (type(dd) ~= 'table'
        or type(dd[1]) ~= 'string' or dd[1] == '' or type(dd[2]) ~= 'number' or dd[2] < 0))
        or (x.art ~= nil and type(x.art) ~= 'string') then
      return redis.error_reply('ERR nbqueue add: bad options of job ' .. k .. ': ' .. e)
    end
    exts = exts or {}
    exts[k] = x
    -- the deduplication key is read (GET) after the first write: check its type now
    if dd then check_types(BASE .. 'de:' .. dd[1], 'string') end
  end
end
-- Validation before the first write (see common.lua): the sets the jobs go to. INCRBY,
-- the first write, checks the counter itself.
local any_wait, any_delayed = false, false
for i = ARG0 + 6, #ARGV, STRIDE do
  if ARGV[i] == '0' then any_wait = true else any_delayed = true end
end
if any_wait then check_types(K_WAIT, 'zset') end
if any_delayed then check_types(K_DELAYED, 'zset') end
local marker_len
if n == 1 and ARGV[ARG0 + 1] == '' and not any_delayed and ARGV[ARG0 + 7] == '' then
  -- A single fresh job due now. A marker still there means no worker is blocked right now
  -- (one would have popped it): then nobody is parked either, and the registry need not be
  -- looked at.
  marker_len = redis.pcall('LLEN', K_MARKER)
  if type(marker_len) ~= 'number' then marker_len = 1 end
  if marker_len == 0 then check_types(K_ACTIVE, 'zset', K_IDLE, 'zset') end
end
-- The label of fresh ids (a job without an id gets s + k .. label)
local label = ''
for i = ARG0 + 1, #ARGV, STRIDE do
  if ARGV[i] == '' then label = id_label(); break end
end
-- One INCRBY reserves a sequence number for every job of the call.
local seq0 = redis.call('INCRBY', K_CTR, n) - n
TRIM_EVENTS = n > 1 or seq0 % 32 == 0
-- Numbers passed to redis.call are formatted by Redis: hand it strings made once instead.
local now_s = fmt(NOW)
local out, added, delayed, zwait, zdelayed = {fmt(seq0), now_s, ''}, {}, {}, {}, {}
if label ~= '' then out[1] = out[1] .. '/' .. label end
local function first_event(entry_id)
  if out[3] == '' and type(entry_id) == 'string' then out[3] = entry_id end
end
local prio_base = {}

-- A single fresh job due now, while a worker is parked (idle, blocked on its hand-off list:
-- see fetch.lua) and the queue is empty, goes straight to that worker: locked and active
-- here, pushed onto the list its BLPOP watches. That saves the fetch on the way from add to
-- start. Returns the worker's token and lock ms, or nil (the job then waits as usual).
local function idle_taker()
  local top = redis.call('ZPOPMAX', K_IDLE)
  if #top == 0 then return nil end
  if tonumber(top[2]) < NOW then
    redis.call('DEL', K_IDLE)  -- the freshest registration has expired: so have all
    return nil
  end
  local meta = redis.call('HMGET', K_META, 'paused', 'rl_max', 'gc')
  -- jobs already waiting go first (strict priority, FIFO); pause and rate limits are
  -- the fetch's business, and so is a global concurrency limit that is reached
  if meta[1] == '1' or meta[2] or redis.call('ZCARD', K_WAIT) > 0
      or (meta[3] and redis.call('ZCARD', K_ACTIVE) >= (tonumber(meta[3]) or 0)) then
    redis.call('ZADD', K_IDLE, top[2], top[1])
    return nil
  end
  local token, lock_ms = string.match(top[1], '^(.*)|(%d+)$')
  if not token then return nil end
  return token, tonumber(lock_ms)
end

local taker, taker_lock_ms
if marker_len == 0 then taker, taker_lock_ms = idle_taker() end

-- Deduplication (ext.dd): the job the key of `dd` points to, if that key is in force, else
-- nil. A key with a ttl holds for its ttl (throttle); one without holds while its job
-- exists and has not finished (a drained or cleaned job does not hold it).
local function dedup_holder(dkey)
  local cur = redis.call('GET', dkey)
  if not cur then return nil end
  if redis.call('PTTL', dkey) >= 0 then return cur end
  local st = redis.pcall('HGET', JOB .. cur, 'state')  -- pcall: not a job hash = no job
  if type(st) ~= 'string' or st == 'completed' or st == 'failed' then return nil end
  return cur
end

-- A deduplicated add: extend the key's ttl, and with `replace` put this job's data and
-- options into the existing job if it is still delayed (its delay starts again).
local function deduplicated(dd, cur, k, i, seq)
  local dkey = BASE .. 'de:' .. dd[1]
  if dd[3] == 1 and dd[2] > 0 then redis.call('PEXPIRE', dkey, fmt(dd[2])) end
  local replaced = '0'
  local key = JOB .. cur
  if dd[4] == 1 and redis.call('HGET', key, 'state') == 'delayed' then
    local delay = tonumber(ARGV[i + 5])
    redis.call('HSET', key, 'name', ARGV[i + 1], 'data', ARGV[i + 2], 'opts', ARGV[i + 3],
      'prio', ARGV[i + 4], 'delay', ARGV[i + 5])
    if delay > 0 then
      redis.call('ZADD', K_DELAYED, delayed_score(NOW + delay, seq), cur)
    else
      redis.call('ZREM', K_DELAYED, cur)
      requeue({cur})
      emit('waiting', {cur})
      push_marker()
    end
    replaced = '1'
  end
  emit('deduplicated', {cur}, {'dedupId', dd[1], 'replaced', replaced})
  out[#out + 1] = -k
  out[#out + 1] = cur
end

for k = 1, n do
  local i = ARG0 + 1 + (k - 1) * STRIDE
  local seq = seq0 + k
  local sid = fmt(seq)
  local id, name, data, opts, prio = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local delay = tonumber(ARGV[i + 5])
  local x = exts and exts[k]
  local existed = false
  local holder
  if id == '' then
    -- A fresh counter value cannot name an existing job: custom ids are never all digits
    -- nor of the labelled form (options.py)
    id = sid .. label
  else
    existed = redis.call('EXISTS', JOB .. id) == 1
  end
  if not existed and x and x.dd then holder = dedup_holder(BASE .. 'de:' .. x.dd[1]) end
  if x and x.art and (existed or holder) then redis.pcall('DEL', BASE .. 'stage:' .. x.art) end
  if existed then
    out[#out + 1] = k
  elseif holder then
    deduplicated(x.dd, holder, k, i, seq)
  elseif x then
    -- lifo / deduplication: written at once (not batched) so that a later job of the same
    -- call sees this one
    local key = JOB .. id
    local dd = x.dd
    local state = 'waiting'
    if delay > 0 then state = 'delayed' end
    local qseq = seq
    if x.lifo then qseq = -seq end
    local fields = {'HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', now_s,
      'prio', prio, 'seq', fmt(qseq), 'state', state, 'delay', ARGV[i + 5]}
    if x.lifo then fields[#fields + 1] = 'lifo'; fields[#fields + 1] = '1' end
    if dd then fields[#fields + 1] = 'dd'; fields[#fields + 1] = dd[1] end
    -- pcall: see fresh_hset below
    local ok = redis.pcall(unpack(fields))
    if type(ok) ~= 'number' then
      out[#out + 1] = -k; out[#out + 1] = ''
      if x.art then redis.pcall('DEL', BASE .. 'stage:' .. x.art) end
    else
      if x.art then  -- the staged artifacts become the job's (no ttl: they live as it does)
        local akey = BASE .. 'art:' .. id
        if redis.pcall('RENAME', BASE .. 'stage:' .. x.art, akey).ok then
          redis.pcall('PERSIST', akey)
        end
      end
      if dd then  -- the key points to the job only once the job exists
        local dkey = BASE .. 'de:' .. dd[1]
        if dd[2] > 0 then redis.call('SET', dkey, id, 'PX', fmt(dd[2]))
        else redis.call('SET', dkey, id) end
      end
      if delay > 0 then
        redis.call('ZADD', K_DELAYED, delayed_score(NOW + delay, seq), id)
        delayed[#delayed + 1] = id
      else
        redis.call('ZADD', K_WAIT, wait_score(prio, qseq), id)
      end
      added[#added + 1] = id
    end
  else
    local key = JOB .. id
    -- fresh_hset: pcall, because a key held by a foreign value (hand-made) at a job's id
    -- makes HSET fail; that job is then left out (-k, '' in the reply) instead of the call
    -- stopping half-way with the jobs before it in no state set.
    local ok
    -- attempts made and a zero delay are left out: absent means 0
    if delay > 0 then
      ok = redis.pcall('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', now_s,
        'prio', prio, 'seq', sid, 'state', 'delayed', 'delay', ARGV[i + 5])
      if type(ok) == 'number' then
        zdelayed[#zdelayed + 1] = delayed_score(NOW + delay, seq); zdelayed[#zdelayed + 1] = id
        delayed[#delayed + 1] = id
      end
    elseif taker then
      local lock = taker .. ':1'
      ok = redis.pcall('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', now_s,
        'prio', prio, 'seq', sid, 'state', 'active', 'pon', now_s, 'lk', lock, 'ats', '1')
      if type(ok) == 'number' then
        redis.call('ZADD', K_ACTIVE, fmt(NOW + taker_lock_ms), id)
        -- the fields of a fetch reply entry (includes/fetch.lua)
        local hkey = BASE .. 'h:' .. taker
        redis.pcall('RPUSH', hkey, cjson.encode({id, lock, name, data, opts, '0', now_s, prio,
          '', '0', 0}))  -- wait 0: started as it was added
        redis.pcall('PEXPIRE', hkey, taker_lock_ms)  -- a worker that died parked: gone with it
        first_event(emit('added', {id}, {'then', 'active', 'also', 'drained'}))
      end
    else
      ok = redis.pcall('HSET', key, 'name', name, 'data', data, 'opts', opts, 'ts', now_s,
        'prio', prio, 'seq', sid, 'state', 'waiting')
      if type(ok) == 'number' then
        local base = prio_base[prio]
        if not base then
          base = (tonumber(prio) or 3) * PRIO_SHIFT
          prio_base[prio] = base
        end
        zwait[#zwait + 1] = fmt(base + seq); zwait[#zwait + 1] = id
      end
    end
    if type(ok) ~= 'number' then
      out[#out + 1] = -k; out[#out + 1] = ''
    elseif not taker then
      added[#added + 1] = id
    end
  end
end
for i = 1, #zwait, 1000 do
  redis.call('ZADD', K_WAIT, unpack(zwait, i, math.min(i + 999, #zwait)))
end
for i = 1, #zdelayed, 1000 do
  redis.call('ZADD', K_DELAYED, unpack(zdelayed, i, math.min(i + 999, #zdelayed)))
end
if #added > 0 then
  first_event(emit('added', added))
  first_event(emit('delayed', delayed))
  if marker_len == nil then push_marker()
  elseif marker_len == 0 then redis.pcall('RPUSH', K_MARKER, '1') end
end
if TOKEN_KEY then redis.call('SET', TOKEN_KEY, cjson.encode(out), 'PX', ARGV[5]) end
if ACKED ~= '' then
  local gone = {}
  for t in string.gmatch(ACKED, '%S+') do gone[#gone + 1] = BASE .. 'add:' .. t end
  redis.pcall('DEL', unpack(gone))
end
return out
