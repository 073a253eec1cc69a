#!lua flags=no-writes
-- A handler's limits as stored, and how many of its queued tasks they hold back now (all of them
-- while it is paused or while a limit allows no start; those beyond what may start otherwise).
-- Read only; the same rules as fetch.lua (lib/limits.lua).
-- @include time, queues, limits
--
-- KEYS[1] limits hash    mq:limits:{TAG}<handler>
-- KEYS[2] bucket hash    mq:bucket:{TAG}<handler>
-- KEYS[3] running zset   mq:wip:{TAG}<handler>
-- KEYS[4..6] the handler's queues: high, normal, low    mq:queue:{TAG}<handler>[:high|:low]
-- KEYS[7] grouped zset   mq:grouped:{TAG}<handler>  (queued tasks that have a concurrency key)
-- Returns {rate (a decimal, as text), burst, max_running, max_running_per_key, paused (0 or 1), held}.

local limits = read_limits(KEYS[1])
local queued = queued_count({high = KEYS[4], normal = KEYS[5], low = KEYS[6]}) + redis.call("ZCARD", KEYS[7])
local now_ms = clock()
local allowed = allowance(limits, KEYS[2], KEYS[3], now_ms, queued)
return {tostring(limits.rate), limits.burst, limits.max_running, limits.max_running_per_key, limits.paused and 1 or 0,
  queued - allowed}
