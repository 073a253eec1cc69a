#!lua
-- After a tick's task was created (or the tick dropped): record the run and move the schedule to
-- its next tick, if it still waits on this tick of this definition (compare-and-set). Several
-- processes may handle the same tick: the first to get here advances the schedule, the others
-- (which got the same task from the tick's idempotency key) change nothing.
--
-- KEYS[1] schedule hash  mq:schedule:{sched}<id>
-- KEYS[2] due zset       mq:schedules:{sched}due
-- ARGV[1] schedule id
-- ARGV[2] created_ms the caller read (the schedule was not deleted and created again since)
-- ARGV[3] gen the caller read (its definition and state were not written since)
-- ARGV[4] the tick handled, epoch ms (the schedule's next_run_ms the caller read)
-- ARGV[5] the next tick, epoch ms, or "" when none is left
-- ARGV[6] the tick's task id, or "" when no task was created
-- ARGV[7] why the tick created no task ("" for a dropped missed tick, or when a task was created)
-- Returns a CODE (scripts.ts): ADVANCED; STALE (the schedule moved on, was changed or paused: the
-- task, if any, is recorded as its last run when it is its latest); NOT_FOUND.

local key, id = KEYS[1], ARGV[1]
local f = redis.call("HMGET", key, "created_ms", "gen", "next_run_ms", "last_run_ms")
if not f[1] or f[1] ~= ARGV[2] then return CODE.NOT_FOUND end
local tick = tonumber(ARGV[4])
local task_id = ARGV[6]
if task_id ~= "" and tick > (tonumber(f[4]) or -1) then
  redis.call("HSET", key, "last_run_ms", ARGV[4], "last_task_id", task_id, "last_error", "")
elseif ARGV[7] ~= "" then
  redis.call("HSET", key, "last_error", ARGV[7])
end
if f[2] ~= ARGV[3] or f[3] ~= ARGV[4] then return CODE.STALE end
redis.call("HSET", key, "next_run_ms", ARGV[5])
if ARGV[5] ~= "" then
  redis.call("ZADD", KEYS[2], ARGV[5], id)
else
  redis.call("ZREM", KEYS[2], id)
end
return CODE.ADVANCED
