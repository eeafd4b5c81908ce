-- remove: delete one job from whatever set holds it. A job locked by a worker is kept.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 job id.
-- Returns 1 removed, 0 no such job, -1 active (locked by a worker), 2 removed and its
-- dependents were notified (a resolver should run: nbqueue/flows.py).
-- A job others depend on notifies them that it is gone (includes/flows.lua); a job waiting
-- for dependencies leaves waiting-children and its deps hash goes with it.
-- @include common
-- @include flows
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local id = ARGV[4]
local key = JOB .. id
if redis.call('EXISTS', key) == 0 then return 0 end
if redis.call('ZSCORE', K_ACTIVE, id) then return -1 end
-- validation before the first write (see common.lua): every set it leaves, and its hash
check_types(K_WAIT, 'zset', K_DELAYED, 'zset', K_COMPLETED, 'zset', K_FAILED, 'zset',
  key, 'hash', K_NOTIFY, 'zset', BASE .. 'waiting-children', 'zset', BASE .. 'deps:' .. id, 'hash')
local dd = redis.call('HGET', key, 'dd')
if dd then check_types(BASE .. 'de:' .. dd, 'string') end
local par, parg = unpack(redis.call('HMGET', key, 'par', 'parg'))
release_dedup(dd, id)
if par then notify_parents(par, parg, id, 'm', 'job ' .. id .. ' of queue ' .. QNAME .. ' was removed') end
redis.call('ZREM', BASE .. 'waiting-children', id)
redis.call('DEL', BASE .. 'deps:' .. id)
redis.call('ZREM', K_WAIT, id)
redis.call('ZREM', K_DELAYED, id)
redis.call('ZREM', K_COMPLETED, id)
redis.call('ZREM', K_FAILED, id)
release_files({id})
redis.call('DEL', key, logs_key(id), art_key(id))
emit('removed', {id})
if par then return 2 end
return 1
