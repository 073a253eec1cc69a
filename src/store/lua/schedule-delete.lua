#!lua
-- Delete a schedule (the tasks it created are kept); every scheduler hears of it.
--
-- KEYS[1] schedule hash  mq:schedule:{sched}<id>
-- KEYS[2] ids set        mq:schedules:{sched}
-- KEYS[3] due zset       mq:schedules:{sched}due
-- ARGV[1] schedule id
-- ARGV[2] the schedule channel
-- Returns a CODE (scripts.ts): DELETED or NOT_FOUND.

local existed = redis.call("DEL", KEYS[1])
redis.call("SREM", KEYS[2], ARGV[1])
redis.call("ZREM", KEYS[3], ARGV[1])
if existed == 0 then return CODE.NOT_FOUND end
redis.call("SPUBLISH", ARGV[2], ARGV[1])
return CODE.DELETED
