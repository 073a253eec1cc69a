-- End a run of a started task: one atomic step. A task that was deleted, or that is no longer this
-- worker's (its lease lapsed and it was recovered), is left alone: a late write never brings a
-- deleted task back.
--
-- KEYS[1] task hash        mq:msg:{TAG}<rest of id>
-- KEYS[2] running zset     mq:wip:{TAG}<handler>
-- KEYS[3] scheduled zset   mq:scheduled:{TAG}<handler>  (retries waiting for their time, score = due, epoch ms)
-- KEYS[4] queue list       mq:queue:{TAG}<handler>
-- ARGV[1]  task id
-- ARGV[2]  outcome: "finished", "failed", or "requeue" (the worker is shutting down: queue it again
--          at the front, without counting the attempt)
-- ARGV[3]  result JSON text: {"stat":"OK","data":...} or {"stat":"ERR_...","error":"..."}
-- ARGV[4]  now, ISO-8601 with microseconds (field `ended_at`)
-- ARGV[5]  cost, seconds
-- ARGV[6]  worker name that started the task
-- ARGV[7]  task channel
-- ARGV[8]  for "failed": when to retry, epoch ms, or "" when the failure must not be retried
-- ARGV[9]  for "failed": error text (field `last_error`)
-- ARGV[10] wake channel of the handler's queue
-- Returns 1 ended, 2 scheduled for a retry, 3 requeued, 0 left alone.

local task_key, wip_key, scheduled_key, queue_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, outcome = ARGV[1], ARGV[2]
local f = redis.call("HMGET", task_key, "status", "handle_worker", "result_ttl", "unique", "attempts", "max_attempts")
if not f[1] then
  redis.call("ZREM", wip_key, id)
  return 0
end
if f[1] ~= "started" or f[2] ~= ARGV[6] then
  return 0
end
redis.call("ZREM", wip_key, id)

if outcome == "requeue" then
  redis.call("HINCRBY", task_key, "attempts", -1)
  back_to_queued(task_key, "the worker shut down while running it", ARGV[7])
  redis.call("LPUSH", queue_key, id)
  redis.call("SPUBLISH", ARGV[10], "1")
  return 3
end

redis.call("HSET", task_key, "cost", ARGV[5])
if outcome == "failed" then
  if ARGV[8] ~= "" and (tonumber(f[5]) or 1) < (tonumber(f[6]) or 1) then
    back_to_queued(task_key, ARGV[9], ARGV[7])
    redis.call("ZADD", scheduled_key, ARGV[8], id)
    return 2
  end
  fail_task(task_key, id, ARGV[4], ARGV[3], ARGV[9], ARGV[7])
  return 1
end

redis.call("HSET", task_key, "status", "finished", "ended_at", ARGV[4], "result", ARGV[3])
redis.call("HINCRBY", task_key, "ver", 1)
redis.call("PEXPIRE", task_key, ttl_ms(f[3], 86400))
release_unique(f[4], id)
publish_snapshot(task_key, ARGV[7])
return 1
