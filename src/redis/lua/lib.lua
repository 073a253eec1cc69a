-- Shared by every script (prepended when scripts are loaded).

-- Publish a task's snapshot, every field but `data` (params never change), to its channel as a
-- JSON array [field, value, field, value, ...]. Watchers order snapshots by the `ver` field.
local function publish_snapshot(task_key, channel)
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
