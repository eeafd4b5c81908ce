-- set_paused: pause (workers take no new jobs; waiting jobs stay waiting) or resume a queue.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 '1' to pause, '0' to resume.
-- @include common
allow_oom()  -- must run on a full Redis (see includes/common.lua)
if ARGV[4] == '1' then
  redis.call('HSET', K_META, 'paused', '1')
  emit('paused', nil)
else
  redis.call('HDEL', K_META, 'paused')
  emit('resumed', nil)
  push_marker()
end
return 1
