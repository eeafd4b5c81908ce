-- logs: append lines to the logs of jobs (job.log, captured print/logging output), keeping
-- the newest `cap` lines of each. Lines of a job that no longer exists are dropped, so a
-- log never outlives its job (the scripts that delete a job delete its log: common.lua).
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 cap (lines kept per job),
--   then per job: id, n, n lines.
-- Returns the number of jobs whose log was written.
-- @include common
local cap = tonumber(ARGV[4])
if not cap or cap < 1 then return redis.error_reply('logs: bad cap ' .. tostring(ARGV[4])) end
-- validate the whole call before the first write
local i = 5
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  if not n or n < 0 or i + 1 + n > #ARGV then
    return redis.error_reply('logs: bad line count for job ' .. tostring(ARGV[i]))
  end
  i = i + 2 + n
end
local written = 0
i = 5
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('EXISTS', JOB .. id) == 1 and n > 0 then
    local key = logs_key(id)
    for j = i + 2, i + 1 + n, 1000 do
      redis.call('RPUSH', key, unpack(ARGV, j, math.min(j + 999, i + 1 + n)))
    end
    if redis.call('LLEN', key) > cap then redis.call('LTRIM', key, -cap, -1) end
    written = written + 1
  end
  i = i + 2 + n
end
return written
