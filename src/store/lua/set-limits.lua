#!lua flags=allow-oom
-- Change a handler's limits hash (lib/limits.lua) and tell its workers at once (`go` on its wake
-- channel), so a queue held back by a limit or a pause looks again in every process. One step.
-- A raised max_running_per_key gives the concurrency keys it held back their turn again at once.
-- @include groups
--
-- KEYS[1] limits hash    mq:limits:{TAG}<handler>
-- KEYS[2..5] the handler's concurrency keys: ring, running, grouped, info (lib/groups.lua)
-- ARGV[1] wake channel of the handler's queue
-- ARGV[2] "set": write every field given; "default": write only the fields the hash lacks (limits
--         given in code: an operator's run-time change, stored in the hash, wins)
-- ARGV[3] prefix of the concurrency keys' sets `mq:group:{TAG}<handler>:`
-- ARGV[4...] field, value, field, value, ...; an empty value removes the field
-- Returns the number of fields changed.

local limits_key, mode = KEYS[1], ARGV[2]
local changed = 0
for i = 4, #ARGV - 1, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  local current = redis.call("HGET", limits_key, field)
  if mode == "set" or not current then
    if value == "" then
      if current then
        redis.call("HDEL", limits_key, field)
        changed = changed + 1
      end
    elseif current ~= value then
      redis.call("HSET", limits_key, field, value)
      changed = changed + 1
    end
  end
end
if changed > 0 then
  -- Keys out of the ring are those at their cap with tasks running (lib/groups.lua's invariant):
  -- those the new cap lets run one more take turns again. One command per running key.
  local g = groups_of(limits_key, KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[3])
  local running = redis.call("HGETALL", g.running)
  for i = 1, #running - 1, 2 do group_recheck(g, running[i], tonumber(running[i + 1]) or 0) end
  redis.call("SPUBLISH", ARGV[1], "go")
end
return changed
