-- Shared by every script (prepended when scripts are loaded).

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
