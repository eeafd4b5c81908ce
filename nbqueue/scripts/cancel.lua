-- cancel: stop a job. A waiting or delayed job fails at once; an active one is marked
-- (`cx` = '1') and its worker is told through its cancel list, which the worker blocks on
-- (BLPOP, no polling): the worker stops the job and finishes it as failed/'cancelled'
-- (finish.lua; a retry of a marked job becomes that failure too, and so does a stall, see
-- stalled.lua). Cancelled jobs are not retried and not dead-lettered.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 job id, 5 reason.
-- A job waiting for its dependencies (waiting-children) is cancelled at once too.
-- Returns {code, state}: 1 cancelled now (3: and the jobs that depend on it were notified:
--   a resolver should run, see nbqueue/flows.py), 2 requested from the worker that runs it,
--   0 no such job, -1 finished already (a no-op), -2 in a state cancel does not handle.
-- Worker cancel lists: BASE .. 'cancel:' .. token, where the lock is token .. ':' .. runs.
-- @include common
-- @include flows
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local id, reason = ARGV[4], ARGV[5]
local key = JOB .. id
local f = redis.call('HMGET', key, 'state', 'lk', 'data')
if not f[3] then return {0, ''} end
local state = f[1] or ''
if state == 'completed' or state == 'failed' then return {-1, state} end
if redis.call('ZSCORE', K_ACTIVE, id) then
  local token = string.match(f[2] or '', '^(.*):%d+$')
  redis.call('HSET', key, 'cx', '1')
  if token then
    local ckey = BASE .. 'cancel:' .. token
    redis.call('RPUSH', ckey, id)
    redis.call('PEXPIRE', ckey, 600000)  -- a dead worker's list goes; its job stalls
  end
  return {2, 'active'}
end
local from
if redis.call('ZSCORE', K_WAIT, id) then from = K_WAIT
elseif redis.call('ZSCORE', K_DELAYED, id) then from = K_DELAYED
elseif redis.call('ZSCORE', K_WCHILD, id) then from = K_WCHILD
else return {-2, state} end
-- validation before the first write (see common.lua)
local par, parg = unpack(redis.call('HMGET', key, 'par', 'parg'))
check_types(K_FAILED, 'zset')
if par then check_types(K_NOTIFY, 'zset') end
redis.call('ZREM', from, id)
if from == K_WCHILD then redis.call('DEL', BASE .. 'deps:' .. id) end
redis.call('HSET', key, 'state', 'failed', 'fr', reason, 'et', 'cancelled', 'fon', NOW,
  'lk', '')
redis.call('ZADD', K_FAILED, NOW, id)
redis.pcall('HINCRBY', K_STATS, 'failed', 1)
emit('failed', {id}, {'reason', 'cancelled'})
emit('cancelled', {id})
if par then  -- jobs depend on this one (depends_on): tell them (includes/flows.lua)
  notify_parents(par, parg, id, 'f', reason)  -- 'par' stays: a retry re-arms them (flows.py)
  return {3, state}
end
return {1, state}
