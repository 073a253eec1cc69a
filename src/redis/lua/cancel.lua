-- Cancel one task. A queued or scheduled task ends CANCELED here; a started one is flagged (`cancel_requested`)
-- and its handler's workers are told on the wake channel (`cancel:<id>`): the worker running it
-- aborts the handler and records the end (finish.lua), or the sweep does if that worker is gone.
--
-- KEYS[1] task hash       mq:msg:{TAG}<id minus TAG>
-- KEYS[2] queue list      mq:queue:{TAG}<handler>
-- KEYS[3] scheduled zset  mq:scheduled:{TAG}<handler>
-- KEYS[4] expiry zset     mq:expiry:{TAG}<handler>
-- KEYS[5] counters hash   mq:stats:{TAG}<handler>
-- ARGV[1] task id
-- ARGV[2] result JSON of a canceled task
-- ARGV[3] task channel
-- ARGV[4] wake channel of the handler's queue
-- Returns 0 no such task, 1 canceled now, 2 running: its worker was told, 3 already canceled,
-- 4 already finished or failed (nothing changed).

local task_key, id = KEYS[1], ARGV[1]
local f = redis.call("HMGET", task_key, "status", "priority")
local status = f[1]
if not status then return 0 end
if status == "canceled" then return 3 end
if status == "finished" or status == "failed" then return 4 end
if status == "started" then
  redis.call("HSET", task_key, "cancel_requested", "1")
  redis.call("HINCRBY", task_key, "ver", 1)
  publish_snapshot(task_key, ARGV[3]) -- watchers see the request
  publish_snapshots()
  redis.call("SPUBLISH", ARGV[4], "cancel:" .. id)
  return 2
end
redis.call("LREM", queue_for(KEYS[2], f[2]), 1, id)
redis.call("ZREM", KEYS[3], id)
redis.call("ZREM", KEYS[4], id)
redis.call("HSET", task_key, "cost", "0")
local _, now = clock()
cancel_task(task_key, id, now, ARGV[2], ARGV[3])
publish_snapshots()
add_counts(KEYS[5])
return 1
