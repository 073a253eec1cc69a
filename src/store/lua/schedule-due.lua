#!lua
-- What a scheduler wakes up to: Redis's time, the schedules whose next tick has come (with their
-- fields), and when the next one after them is due. An id in the due set without its hash (not
-- written by BaiChuan's scripts) is dropped from the set.
--
-- KEYS[1] due zset  mq:schedules:{sched}due   (score = next tick, epoch ms)
-- ARGV[1] schedule key prefix `mq:schedule:{sched}`
-- ARGV[2] most schedules to return
-- Returns {now (epoch ms), the earliest tick after now (epoch ms) or -1 for none, then, per due
-- schedule, its id and its fields as a flat list [name, value, ...]}; fewer than ARGV[2] schedules
-- means that is all of them.

local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_text = string.format("%d", now)
local out = {now, -1}
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now_text, "LIMIT", 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local fields = redis.call("HGETALL", ARGV[1] .. id)
  if #fields == 0 then
    redis.call("ZREM", KEYS[1], id)
  else
    out[#out + 1] = id
    out[#out + 1] = fields
  end
end
local later = redis.call("ZRANGEBYSCORE", KEYS[1], "(" .. now_text, "+inf", "WITHSCORES", "LIMIT", 0, 1)
if later[2] then out[2] = tonumber(later[2]) end
return out
