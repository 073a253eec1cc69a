#!lua flags=allow-oom
-- Record a running task's progress, if the run reporting it is still the task's current run (a
-- late report from a run that ended, or was taken back by the sweep, changes nothing).
-- @include publish
--
-- KEYS[1] task hash  mq:msg:{TAG}<id minus TAG>
-- ARGV[1] worker name that runs the task
-- ARGV[2] percent, 0 to 100
-- ARGV[3] message (may be empty)
-- ARGV[4] task channel
-- ARGV[5] the run's attempt number (a report of an earlier run of the task is ignored)
-- Returns a CODE (scripts.ts): RECORDED or IGNORED.

local f = redis.call("HMGET", KEYS[1], "status", "handle_worker", "attempts")
if f[1] ~= "started" or f[2] ~= ARGV[1] or f[3] ~= ARGV[5] then return CODE.IGNORED end
redis.call("HSET", KEYS[1], "progress", ARGV[2], "progress_message", ARGV[3])
redis.call("HINCRBY", KEYS[1], "ver", 1)
publish_snapshot(KEYS[1], ARGV[4])
publish_snapshots()
return CODE.RECORDED
