-- End a started task, finished or failed: one atomic step. A task that was deleted, or that is no
-- longer this worker's, is left alone (a late write never brings a deleted task back).
--
-- KEYS[1] task hash     mq:msg:{TAG}<rest of id>
-- KEYS[2] running zset  mq:wip:{TAG}<handler>
-- ARGV[1] task id
-- ARGV[2] new status: "finished" or "failed"
-- ARGV[3] result JSON text: {"stat":"OK","data":...} or {"stat":"ERR_...","error":"..."}
-- ARGV[4] now, ISO-8601 with microseconds (field `ended_at`)
-- ARGV[5] cost, seconds
-- ARGV[6] worker name that started the task
-- ARGV[7] task channel
-- Returns 1 when the task was ended, 0 when it was left alone.

local task_key, wip_key = KEYS[1], KEYS[2]
local id = ARGV[1]
local f = redis.call("HMGET", task_key, "status", "handle_worker", "result_ttl", "failure_ttl", "unique")
if not f[1] then
  redis.call("ZREM", wip_key, id)
  return 0
end
if f[1] ~= "started" or f[2] ~= ARGV[6] then
  return 0
end
redis.call("ZREM", wip_key, id)
redis.call("HSET", task_key, "status", ARGV[2], "ended_at", ARGV[4], "cost", ARGV[5], "result", ARGV[3])
redis.call("HINCRBY", task_key, "ver", 1)
local ttl = ARGV[2] == "finished" and f[3] or f[4]
redis.call("PEXPIRE", task_key, ttl_ms(ttl, 86400))
release_unique(f[5], id)
publish_snapshot(task_key, ARGV[7])
return 1
