-- art_put: store an artifact of a job (a processor's frame result: nbqueue/dataplane.py
-- put_result), only while the job exists: bytes written for a job removed meanwhile
-- would outlive it.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 job id, 5 field (the sha256 of the
--   bytes, or 'x:' .. the URL of a file of an fsspec store), 6 value (the Arrow bytes, or
--   the file's sha256), 7 '1' for a file (meta xart = '1': the queue's deletions then list
--   its files for the sweep; see includes/common.lua).
-- Returns 1 stored, 0 no such job (nothing written).
-- @include common
local id = ARGV[4]
if redis.call('EXISTS', JOB .. id) == 0 then return 0 end
local akey = BASE .. 'art:' .. id
check_types(akey, 'hash')
if ARGV[7] == '1' then check_types(K_META, 'hash') end
redis.call('HSET', akey, ARGV[5], ARGV[6])
if ARGV[7] == '1' then redis.call('HSET', K_META, 'xart', '1') end
return 1
