-- obliterate: delete the whole queue, jobs and bookkeeping, at most ARGV[5] jobs per call.
-- The caller repeats the call until it says "done" (ops.QueueOps.obliterate), so that no
-- call keeps Redis busy for long whatever the queue's size (like add_bulk). The first call
-- pauses the queue, so that workers take no job while the later calls run. Refused while
-- jobs are active unless forced (their workers would find their jobs gone and drop them);
-- every call checks, so a refusal never comes after a partial delete unless a job became
-- active in between (possible only for a worker that held it already).
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 '1' to force, 5 max jobs this call.
-- Returns {jobs deleted by this call, 1 when done else 0}, or {-1, 0} when refused.
-- @include common
allow_oom()  -- must run on a full Redis (see includes/common.lua)
if ARGV[4] ~= '1' and redis.call('ZCARD', K_ACTIVE) > 0 then return {-1, 0} end
local budget = tonumber(ARGV[5])
redis.call('HSET', K_META, 'paused', '1')
local n = 0
-- jobs waiting for dependencies: their deps hashes first, then them (like the other sets)
local K_WCHILD = BASE .. 'waiting-children'
while n < budget do
  local ids = redis.call('ZRANGE', K_WCHILD, 0, math.min(999, budget - n - 1))
  if #ids == 0 then break end
  release_files(ids)
  for i = 1, #ids do
    redis.call('DEL', BASE .. 'deps:' .. ids[i], JOB .. ids[i], logs_key(ids[i]), art_key(ids[i]))
  end
  redis.call('ZREMRANGEBYRANK', K_WCHILD, 0, #ids - 1)
  n = n + #ids
end
for _, set in ipairs({K_WAIT, K_ACTIVE, K_DELAYED, K_COMPLETED, K_FAILED}) do
  if n < budget then n = n + delete_set(set, budget - n) end
end
if n >= budget then return {n, 0} end
redis.call('DEL', BASE .. 'notify')
-- per-minute history keys live one day: delete that window by name (no KEYS scan)
local minute = math.floor(NOW / 60000)
for m = minute - 1441, minute + 1, 200 do
  local batch = {}
  for k = m, math.min(m + 199, minute + 1) do batch[#batch + 1] = K_STATS .. ':m:' .. k end
  redis.call('DEL', unpack(batch))
end
-- job schedulers (nbqueue.scheduler): hashes listed in the schedulers ZSET, same slot
local base = string.sub(K_META, 1, #K_META - 4)
for _, sid in ipairs(redis.call('ZRANGE', base .. 'schedulers', 0, -1)) do
  redis.call('DEL', base .. 'scheduler:' .. sid)
end
redis.call('DEL', base .. 'schedulers')
-- named batches (Queue.map(name=)): their id lists, listed in the batches ZSET
for _, name in ipairs(redis.call('ZRANGE', BASE .. 'batches', 0, -1)) do
  redis.call('DEL', BASE .. 'batch:' .. name)
end
redis.call('DEL', BASE .. 'batches')
-- artgc (files of deleted jobs) stays: the caller sweeps it right after this script.
-- add tokens (add.lua: BASE .. 'add:<token>') are not looked for: finding them would take
-- a SCAN of the whole keyspace inside this script (Redis blocked meanwhile); they expire by
-- themselves within ops.ADD_TOKEN_TTL_MS.
redis.call('DEL', K_META, K_CTR, K_EVENTS, K_MARKER, K_LIMITER, K_STALLED, K_STATS)
return {n, 1}
