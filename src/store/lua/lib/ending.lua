-- @include publish, counts

-- Release a task's unique key if it still names this task.
local function release_unique(unique_key, task_id)
  if unique_key and unique_key ~= "" and redis.call("GET", unique_key) == task_id then
    redis.call("DEL", unique_key)
  end
end

-- A TTL field (seconds, fractions allowed) in milliseconds, at least 1; `fallback` seconds if unreadable.
local function ttl_ms(seconds, fallback)
  return math.max(1, math.floor((tonumber(seconds) or fallback) * 1000))
end

-- End a task as `failed` or `canceled`: status, end time, result (and `last_error` when given),
-- expiry after its failure_ttl, unique lock released, snapshot published, outcome counted (with
-- `run_time`, seconds, when a worker reported the run's end: counts.lua).
local function end_task(task_key, id, status, now_iso, result_json, error_text, channel, run_time)
  local f = redis.call("HMGET", task_key, "failure_ttl", "unique")
  redis.call("HSET", task_key, "status", status, "ended_at", now_iso, "result", result_json)
  if error_text then redis.call("HSET", task_key, "last_error", error_text) end
  redis.call("HDEL", task_key, "cancel_requested")
  redis.call("HINCRBY", task_key, "ver", 1)
  redis.call("PEXPIRE", task_key, ttl_ms(f[1], 604800))
  release_unique(f[2], id)
  publish_snapshot(task_key, channel)
  count(status, run_time)
end

-- Put a task back in the queued state (it will be pushed on the queue or scheduled by the caller).
local function back_to_queued(task_key, error_text, channel)
  redis.call("HSET", task_key, "status", "queued", "handle_worker", "", "last_error", error_text)
  redis.call("HINCRBY", task_key, "ver", 1)
  publish_snapshot(task_key, channel)
end
