-- retry_failed: move failed jobs back to wait (attempts reset), oldest first.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 limit (0 = all), 5 job id ('' = any).
-- Returns the number of jobs moved.
-- @include common
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local limit, only = tonumber(ARGV[4]), ARGV[5]
local moved = 0
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
  check_types(K_WAIT, 'zset')
  check_int(K_CTR)
  zrem_many(K_FAILED, ids)
  for _, id in ipairs(ids) do
    redis.pcall('HSET', JOB .. id, 'atm', 0, 'stc', 0, 'fr', '', 'et', '', 'fon', '', 'rv', '',
      'cx', '')
  end
  requeue(ids)
  emit('waiting', ids)
  moved = moved + #ids
  if only ~= '' then break end
end
if moved > 0 then push_marker() end
return moved
