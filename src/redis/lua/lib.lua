-- Shared by every script (prepended when scripts are loaded).

-- Publish a task's snapshot, every field but `data` (params never change), to its channel as a
-- JSON array [field, value, field, value, ...]. Watchers order snapshots by the `ver` field.
-- Skipped when nobody listens (a watcher subscribes before it reads the task, so it never misses).
local function publish_snapshot(task_key, channel)
  if redis.call("PUBSUB", "SHARDNUMSUB", channel)[2] == 0 then
    return
  end
  local all = redis.call("HGETALL", task_key)
  local out = {}
  for i = 1, #all, 2 do
    if all[i] ~= "data" then
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
    end
  end
  redis.call("SPUBLISH", channel, cjson.encode(out))
end

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

-- End a task as failed: result, expiry after its failure_ttl, unique lock released, snapshot published.
local function fail_task(task_key, id, now_iso, result_json, error_text, channel)
  local f = redis.call("HMGET", task_key, "failure_ttl", "unique")
  redis.call("HSET", task_key, "status", "failed", "ended_at", now_iso, "result", result_json, "last_error", error_text)
  redis.call("HINCRBY", task_key, "ver", 1)
  redis.call("PEXPIRE", task_key, ttl_ms(f[1], 604800))
  release_unique(f[2], id)
  publish_snapshot(task_key, channel)
end

-- Put a task back in the queued state (it will be pushed on the queue or scheduled by the caller).
local function back_to_queued(task_key, error_text, channel)
  redis.call("HSET", task_key, "status", "queued", "handle_worker", "", "last_error", error_text)
  redis.call("HINCRBY", task_key, "ver", 1)
  publish_snapshot(task_key, channel)
end
