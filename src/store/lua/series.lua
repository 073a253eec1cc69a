#!lua flags=no-writes
-- Read a handler's per-minute series (lib/minutes.lua writes it): the hashes of the last N minutes,
-- ending with the current one by Redis's clock, in one call.
-- @include time
--
-- KEYS[1] counters hash   mq:stats:{TAG}<handler>  (the minute hashes are its name + ":<epoch minute>")
-- ARGV[1] minutes to read (1 to SERIES_MINUTES)
-- Returns {current epoch minute, {field, value, ...} for each minute, oldest first ({} for none)}.

local now_ms = clock()
local current = math.floor(now_ms / 60000)
local minutes = math.min(tonumber(ARGV[1]) or 1, SERIES_MINUTES)
local out = {current}
for minute = current - minutes + 1, current do
  out[#out + 1] = redis.call("HGETALL", KEYS[1] .. ":" .. minute)
end
return out
