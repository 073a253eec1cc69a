-- Shared by every script (prepended when scripts are loaded).

-- An ISO-8601 UTC time with microseconds (`2025-05-25T05:25:01.375784Z`, the original's form) from
-- epoch seconds and microseconds. Civil date from days since the epoch (H. Hinnant's algorithm).
local function iso_time(seconds, micros)
  local days = math.floor(seconds / 86400)
  local secs = seconds - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format("%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", year, month, day,
    math.floor(secs / 3600), math.floor(secs % 3600 / 60), secs % 60, micros)
end

-- Now, by Redis's own clock: epoch ms, and the same as an ISO time. Every time a script stores or
-- compares (lease deadlines, due times, queue deadlines, created/started/ended times) comes from
-- here, so the clocks of the processes that call the scripts do not matter.
local function clock()
  local t = redis.call("TIME")
  local seconds, micros = tonumber(t[1]), tonumber(t[2])
  return seconds * 1000 + math.floor(micros / 1000), iso_time(seconds, micros)
end

-- An epoch ms time as an ISO time (for due times).
local function iso_from_ms(ms)
  local seconds = math.floor(ms / 1000)
  return iso_time(seconds, (ms - seconds * 1000) * 1000)
end

-- A handler's queue for a priority: the original's list for 0, the lists `:high` (1) and `:low`
-- (-1) beside it (same slot). Workers take from high, then normal, then low; FIFO within each.
local function queue_for(queue_key, priority)
  if priority == "1" then return queue_key .. ":high" end
  if priority == "-1" then return queue_key .. ":low" end
  return queue_key
end

-- Tasks waiting in a handler's queues, all priorities.
local function queued_count(queue_key)
  return redis.call("LLEN", queue_key) + redis.call("LLEN", queue_key .. ":high") + redis.call("LLEN", queue_key .. ":low")
end

-- Most arguments passed to one command built from a batch (Lua's unpack has a stack limit).
local CHUNK = 1000

-- Run `command key args...` over a list of arguments, in chunks of at most CHUNK.
local function call_chunked(command, key, args)
  for i = 1, #args, CHUNK do
    redis.call(command, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
end

-- Snapshots to publish when the script ends: task key, channel, task key, channel, ...
local snapshots = {}

-- Publish a task's snapshot when the script ends (see publish_snapshots).
local function publish_snapshot(task_key, channel)
  snapshots[#snapshots + 1] = task_key
  snapshots[#snapshots + 1] = channel
end

-- Publish the snapshots asked for, every field but `data` (params never change), each to its
-- channel as a JSON array [field, value, field, value, ...]; watchers order them by `ver`. One
-- PUBSUB SHARDNUMSUB per chunk tells which channels have listeners; the others are skipped (a
-- watcher subscribes before it reads the task, so it never misses a change). Every script that
-- changes tasks ends with this call.
local function publish_snapshots()
  for i = 1, #snapshots, CHUNK do
    local last = math.min(i + CHUNK - 1, #snapshots)
    local channels = {}
    for k = i + 1, last, 2 do channels[#channels + 1] = snapshots[k] end
    local counts = redis.call("PUBSUB", "SHARDNUMSUB", unpack(channels))
    for k = 2, #counts, 2 do
      if counts[k] > 0 then
        local task_key, channel = snapshots[i + k - 2], counts[k - 1]
        local all = redis.call("HGETALL", task_key)
        local out = {}
        for f = 1, #all, 2 do
          if all[f] ~= "data" then
            out[#out + 1] = all[f]
            out[#out + 1] = all[f + 1]
          end
        end
        redis.call("SPUBLISH", channel, cjson.encode(out))
      end
    end
  end
  snapshots = {}
end

-- Runs ended, by outcome (finished, failed, retried, canceled), to add to the handler's counters
-- (`mq:stats:{TAG}<handler>`) when the script ends: one HINCRBY per outcome, not per task.
local counts = {}

local function count(outcome)
  counts[outcome] = (counts[outcome] or 0) + 1
end

-- Add the counted outcomes to the handler's counters. Every script that ends runs calls it last.
local function add_counts(stats_key)
  for outcome, n in pairs(counts) do
    redis.call("HINCRBY", stats_key, outcome, n)
  end
  counts = {}
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
  count("failed")
end

-- End a task as canceled: result, expiry after its failure_ttl, unique lock released, snapshot published.
local function cancel_task(task_key, id, now_iso, result_json, channel)
  local f = redis.call("HMGET", task_key, "failure_ttl", "unique")
  redis.call("HSET", task_key, "status", "canceled", "ended_at", now_iso, "result", result_json)
  redis.call("HDEL", task_key, "cancel_requested")
  redis.call("HINCRBY", task_key, "ver", 1)
  redis.call("PEXPIRE", task_key, ttl_ms(f[1], 604800))
  release_unique(f[2], id)
  publish_snapshot(task_key, channel)
  count("canceled")
end

-- Put a task back in the queued state (it will be pushed on the queue or scheduled by the caller).
local function back_to_queued(task_key, error_text, channel)
  redis.call("HSET", task_key, "status", "queued", "handle_worker", "", "last_error", error_text)
  redis.call("HINCRBY", task_key, "ver", 1)
  publish_snapshot(task_key, channel)
end
