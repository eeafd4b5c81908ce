-- drain: remove every waiting job (and the delayed ones when asked); active jobs run on.
-- KEYS: 1 the queue prefix "nbq:{q}:" (see includes/common.lua).
-- ARGV: 1 job prefix, 2 now ms, 3 events maxlen, 4 '1' to drain delayed jobs too.
-- Returns the number of jobs removed.
-- @include common
allow_oom()  -- must run on a full Redis (see includes/common.lua)
local removed = 0
local sets = {K_WAIT}
if ARGV[4] == '1' then sets[2] = K_DELAYED end
for _, set in ipairs(sets) do removed = removed + delete_set(set) end
emit('drained', nil, {'removed', tostring(removed)})
return removed
