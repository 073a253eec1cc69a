-- Create a task and queue it: one atomic step.
--
-- KEYS[1] task hash       mq:msg:{TAG}<rest of id>
-- KEYS[2] queue list      mq:queue:{TAG}<handler>
-- KEYS[3] unique string   mq:unique:{TAG}<handler>:<params digest>  (used only when ARGV[11] == "1")
-- KEYS[4] expiry zset     mq:expiry:{TAG}<handler>  (queue deadlines, epoch ms; used only with a ttl)
-- ARGV[1]  task id (20 hex; the first 4 are TAG)
-- ARGV[2]  handler path (field `origin`)
-- ARGV[3]  params as JSON text (field `data`)
-- ARGV[4]  timeout, seconds
-- ARGV[5]  result_ttl, seconds
-- ARGV[6]  failure_ttl, seconds
-- ARGV[7]  ttl, seconds, or "" for none
-- ARGV[8]  creator's IP, or ""
-- ARGV[9]  now, ISO-8601 with microseconds (created_at and enqueued_at)
-- ARGV[10] queue deadline, epoch ms, or "" for none (field `drop_at`)
-- ARGV[11] "1" for a unique create, else "0"
-- ARGV[12] wake channel of the handler's queue
-- ARGV[13] task key prefix `mq:msg:{TAG}`, to find the task a unique key names
-- ARGV[14] max_attempts
-- ARGV[15] most tasks the queue may hold, 0 for no limit
-- Returns {task id, 0} for a new task, {existing id, 1} for a unique hit, {"", -1} if the id is
-- taken, {"", -2} if the queue is full.

local task_key, queue_key, unique_key, expiry_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]
local unique = ARGV[11] == "1"

if unique then
  local existing = redis.call("GET", unique_key)
  if existing then
    local status = redis.call("HGET", ARGV[13] .. string.sub(existing, 5), "status")
    if status == "queued" or status == "started" then
      return {existing, 1}
    end
  end
end

local max_queued = tonumber(ARGV[15])
if max_queued > 0 and redis.call("LLEN", queue_key) >= max_queued then
  return {"", -2}
end

if redis.call("EXISTS", task_key) == 1 then
  return {"", -1}
end

redis.call("HSET", task_key,
  "origin", ARGV[2], "status", "queued", "timeout", ARGV[4], "ip", ARGV[8],
  "created_at", ARGV[9], "enqueued_at", ARGV[9], "handle_worker", "", "data", ARGV[3],
  "result_ttl", ARGV[5], "failure_ttl", ARGV[6], "attempts", "0", "max_attempts", ARGV[14], "ver", "1")
if ARGV[7] ~= "" then
  redis.call("HSET", task_key, "ttl", ARGV[7], "drop_at", ARGV[10])
  redis.call("ZADD", expiry_key, ARGV[10], id)
end
if unique then
  redis.call("SET", unique_key, id)
  redis.call("HSET", task_key, "unique", unique_key)
end
redis.call("RPUSH", queue_key, id)
redis.call("SPUBLISH", ARGV[12], "1")
return {id, 0}
