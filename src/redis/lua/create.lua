-- Create tasks of one handler and queue them, in order: one atomic step for the whole batch.
--
-- KEYS[1] queue list    mq:queue:{TAG}<handler>
-- KEYS[2] expiry zset   mq:expiry:{TAG}<handler>  (queue deadlines, epoch ms; written for tasks with a ttl)
-- ARGV[1] handler path (field `origin`)
-- ARGV[2] now, ISO-8601 with microseconds (created_at; enqueued_at is stored only when it differs)
-- ARGV[3] wake channel of the handler's queue
-- ARGV[4] task key prefix `mq:msg:{TAG}` (a task's key is the prefix and its id without the tag)
-- ARGV[5] most tasks the queue may hold, 0 for no limit
-- Then 10 values per task:
--   id (20 hex, the first 4 are TAG), params JSON (field `data`), timeout (s), result_ttl (s),
--   failure_ttl (s, or "" for the default), ttl (s, or ""), creator's IP (or ""), unique key (or ""
--   when not unique: mq:unique:{TAG}<handler>:<params digest>), max_attempts (or "" for the
--   default, 1), queue deadline (epoch ms, or "")
-- Returns, per task, {id, code}: code 0 new, 1 a unique hit (id is the live task's), -1 the id is
-- taken (draw another), -2 the queue is full.
-- The handler's workers are woken only when the queue was empty: a worker that saw it empty waits
-- for that wake-up, one that did not is still draining it.

local queue_key, expiry_key = KEYS[1], KEYS[2]
local handler, now, prefix = ARGV[1], ARGV[2], ARGV[4]
local max_queued = tonumber(ARGV[5])
local length = redis.call("LLEN", queue_key)
local was_empty = length == 0
local out = {}

for i = 6, #ARGV, 10 do
  local id, unique_key = ARGV[i], ARGV[i + 7]
  local task_key = prefix .. string.sub(id, 5)
  local code = 0
  if unique_key ~= "" then
    local existing = redis.call("GET", unique_key)
    if existing then
      local status = redis.call("HGET", prefix .. string.sub(existing, 5), "status")
      if status == "queued" or status == "started" then
        id, code = existing, 1
      end
    end
  end
  if code == 0 and max_queued > 0 and length >= max_queued then
    code = -2
  elseif code == 0 and redis.call("EXISTS", task_key) == 1 then
    code = -1
  elseif code == 0 then
    redis.call("HSET", task_key,
      "origin", handler, "status", "queued", "timeout", ARGV[i + 2], "ip", ARGV[i + 6],
      "created_at", now, "handle_worker", "", "data", ARGV[i + 1],
      "result_ttl", ARGV[i + 3], "attempts", "0", "ver", "1")
    -- failure_ttl and max_attempts are stored only when they differ from their defaults (memory).
    if ARGV[i + 4] ~= "" then redis.call("HSET", task_key, "failure_ttl", ARGV[i + 4]) end
    if ARGV[i + 8] ~= "" then redis.call("HSET", task_key, "max_attempts", ARGV[i + 8]) end
    if ARGV[i + 5] ~= "" then
      redis.call("HSET", task_key, "ttl", ARGV[i + 5], "drop_at", ARGV[i + 9])
      redis.call("ZADD", expiry_key, ARGV[i + 9], id)
    end
    if unique_key ~= "" then
      redis.call("SET", unique_key, id)
      redis.call("HSET", task_key, "unique", unique_key)
    end
    redis.call("RPUSH", queue_key, id)
    length = length + 1
  end
  out[#out + 1] = id
  out[#out + 1] = code
end

if was_empty and length > 0 then
  redis.call("SPUBLISH", ARGV[3], "1")
end
return out
