-- Fresh job ids after a failover (docs/scaling.md "Job ids after a failover").
-- A fresh id is the queue's counter value. Replication is asynchronous: a replica promoted
-- by Sentinel (or a cluster failover) may lag, so its counter can be behind ids the old
-- primary already handed out, acknowledged and lost; issuing those numbers again would give
-- an old Job handle another job's result. So ids carry a label of the primary's history:
-- '' until the queue's ids are issued by a server that was promoted since it started, then
-- '-' .. the first 8 hex digits of that server's replication id (a new random id at every
-- promotion; INFO replication's master_replid), e.g. '715-3fa85f64'. The record
-- meta.rid/meta.idl says which replication id last issued ids and with which label:
--   same replication id -> same label (the common case: one HMGET and one INFO call);
--   another one, and this server has a master_replid2 (it was promoted since it started:
--     the ids it did not receive may have been handed out) -> a new label;
--   another one, no master_replid2 (a restart: its data is its own history) -> label kept.
-- The label changes only at a failover, so ids stay '1', '2', ... on a single server.
-- Call before the script's first write (its HMGET refuses a meta key of the wrong type
-- before anything is written).
-- (Plain string.find, not patterns: a pattern scan of the INFO text costs microseconds.)
local function info_field(info, name)
  local _, e = string.find(info, name, 1, true)
  if not e then return '' end
  return string.sub(info, e + 1, e + 40)  -- replication ids are 40 hex digits
end

-- The check is cached for 500 ms in the field meta.idchk ("<replication id>|<server ms>"),
-- written with redis.set_repl(REPL_NONE): never sent to replicas nor to the AOF. A replica
-- never receives it through replication; it can hold a copy only from a full sync's
-- snapshot, and that copy is too old to count by the time the replica is promoted after
-- its primary failed (Sentinel waits down-after-milliseconds, a cluster its node timeout,
-- both well above 500 ms; a coordinated failover loses nothing). So INFO runs at most
-- about twice a second per queue, not on every add, and no key comes or goes.
local function id_label()
  local rec = redis.call('HMGET', K_META, 'rid', 'idl', 'idchk')
  if rec[1] and rec[3] then
    local chk, at = string.match(rec[3], '^(%x+)|(%d+)$')
    if chk == rec[1] and NOW - tonumber(at) < 500 then return rec[2] or '' end
  end
  -- pcall: an ACL user without +info cannot run INFO; its adds keep the recorded label
  -- (their ids are then not failover-safe; docs/scaling.md)
  local info = redis.pcall('INFO', 'replication')
  if type(info) ~= 'string' then return rec[2] or '' end
  local replid = info_field(info, '\nmaster_replid:')
  redis.set_repl(redis.REPL_NONE)
  redis.call('HSET', K_META, 'idchk', replid .. '|' .. fmt(NOW))
  redis.set_repl(redis.REPL_ALL)
  if rec[1] == replid then return rec[2] or '' end
  local label = rec[2] or ''
  local replid2 = info_field(info, '\nmaster_replid2:')
  if string.find(replid2, '[1-9a-f]') then label = '-' .. string.sub(replid, 1, 8) end
  redis.call('HSET', K_META, 'rid', replid, 'idl', label)
  return label
end
