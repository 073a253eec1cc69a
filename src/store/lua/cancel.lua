#!lua flags=allow-oom
-- Cancel one task. A queued or scheduled task ends CANCELED here; a started one is flagged
-- (`cancel_requested`) and its handler's workers are told on the wake channel (`cancel:<id>`): the
-- worker running it aborts the handler and records the end (finish.lua), or the sweep does if that
-- worker is gone.
-- @include time, queues, ending, groups
--
-- KEYS[1] task hash       mq:msg:{TAG}<id minus TAG>
-- KEYS[2..4] the handler's queues: high, normal, low    mq:queue:{TAG}<handler>[:high|:low]
-- KEYS[5] scheduled zset  mq:scheduled:{TAG}<handler>
-- KEYS[6] expiry zset     mq:expiry:{TAG}<handler>
-- KEYS[7] counters hash   mq:stats:{TAG}<handler>
-- KEYS[8] limits hash  mq:limits:{TAG}<handler>  (field max_running_per_key)
-- KEYS[9..12] the handler's concurrency keys: ring, running, grouped, info (lib/groups.lua)
-- ARGV[1] task id
-- ARGV[2] result JSON of a canceled task
-- ARGV[3] task channel
-- ARGV[4] wake channel of the handler's queue
-- ARGV[5] prefix of the concurrency keys' sets `mq:group:{TAG}<handler>:`
-- Returns a CODE (scripts.ts): NOT_FOUND, CANCELED (now), SIGNALED (running: its worker was told),
-- ALREADY_CANCELED, or ALREADY_ENDED (finished or failed: nothing changed).

local task_key, id = KEYS[1], ARGV[1]
local queues = {high = KEYS[2], normal = KEYS[3], low = KEYS[4]}
local f = redis.call("HMGET", task_key, "status", "priority", "concurrency_key")
local status = f[1]
if not status then return CODE.NOT_FOUND end
if status == "canceled" then return CODE.ALREADY_CANCELED end
if status == "finished" or status == "failed" then return CODE.ALREADY_ENDED end
if status == "started" then
  redis.call("HSET", task_key, "cancel_requested", "1")
  redis.call("HINCRBY", task_key, "ver", 1)
  publish_snapshot(task_key, ARGV[3]) -- watchers see the request
  publish_snapshots()
  redis.call("SPUBLISH", ARGV[4], "cancel:" .. id)
  return CODE.SIGNALED
end
if f[3] then
  group_remove(groups_of(KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], ARGV[5]), f[3], id)
else
  redis.call("LREM", queue_for(queues, f[2]), 1, id)
end
redis.call("ZREM", KEYS[5], id)
redis.call("ZREM", KEYS[6], id)
redis.call("HSET", task_key, "cost", "0")
local _, now = clock()
end_task(task_key, id, "canceled", now, ARGV[2], nil, ARGV[3])
publish_snapshots()
add_counts(KEYS[7])
return CODE.CANCELED
