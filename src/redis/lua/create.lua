-- Create tasks of one handler and queue them, in order: one atomic step for the whole batch.
--
-- KEYS[1] queue list    mq:queue:{TAG}<handler>  (priority 0; `:high` and `:low` lists beside it)
-- KEYS[2] expiry zset   mq:expiry:{TAG}<handler>  (queue deadlines, epoch ms; written for tasks with a ttl)
-- KEYS[3] scheduled zset mq:scheduled:{TAG}<handler> (delayed tasks and retries, score = due, epoch ms)
-- ARGV[1] handler path (field `origin`)
-- ARGV[2] wake channel of the handler's queue
-- ARGV[3] task key prefix `mq:msg:{TAG}` (a task's key is the prefix and its id without the tag)
-- ARGV[4] most tasks the queue may hold, 0 for no limit
-- ARGV[5] life of idempotency records (s)
-- Then 14 values per task:
--   id (20 hex, the first 4 are TAG), params JSON (field `data`), timeout (s), result_ttl (s),
--   failure_ttl (s, or "" for the default), ttl (s, or ""), creator's IP (or ""), unique key (or ""
--   when not unique: mq:unique:{TAG}<handler>:<params digest>), max_attempts (or "" for the
--   default, 1), due time ("+<ms>": a delay from now; "<epoch ms>": a start time, queued now if it
--   passed; "": queue it now), priority ("1", "-1", or "" for 0), id of the request that created it
--   (field `request_id`, or ""), idempotency record key (or "" without an idempotency key:
--   mq:idem:{TAG}<handler>:<key>), params digest (with a record key)
-- Times (created_at, due times, the queue deadline `drop_at` = due or now + ttl) are Redis's own
-- (clock() in lib.lua); enqueued_at is stored only when it differs from created_at.
-- Returns, per task, {id, code}: code 0 new, 1 a unique hit (id is the live task's), 2 and 3 the
-- idempotency key was used before with the same params (id is what that create answered: 2 a new
-- task, 3 a unique hit), -1 the id is taken (draw another), -2 the queue is full, -3 the
-- idempotency key was used before with other params (id is "").
-- An idempotency record is written with the answer (codes 0 and 1), in this same step, so a create
-- whose reply was lost is answered the same when it is sent again, for as long as the record lives
-- (even after its task ended, expired or was deleted: the task is never created twice).
-- The handler's workers are woken only when its queues were all empty: a worker that saw them
-- empty waits for that wake-up, one that did not is still draining them. A delayed task is
-- SCHEDULED, and the workers hear `due-in:<ms>` (how long until the batch's earliest due time) on
-- the wake channel: a worker whose promotion timer for the handler rings later sets it sooner.

local queue_key, expiry_key, scheduled_key = KEYS[1], KEYS[2], KEYS[3]
local handler, prefix = ARGV[1], ARGV[3]
local max_queued = tonumber(ARGV[4])
local record_ttl = ARGV[5]
local now_ms, now = clock()
local length = queued_count(queue_key)
local was_empty = length == 0
local earliest = nil -- earliest due time among this batch's delayed tasks
local out = {}

for i = 6, #ARGV, 14 do
  local id, unique_key = ARGV[i], ARGV[i + 7]
  local record_key, digest = ARGV[i + 12], ARGV[i + 13]
  local task_key = prefix .. string.sub(id, 5)
  local code = 0
  if record_key ~= "" then
    local record = redis.call("GET", record_key)
    if record then
      local first, first_digest, first_code = string.match(record, "^(%S+) (%S+) (%d)$")
      if first_digest == digest then
        id, code = first, 2 + tonumber(first_code)
      else
        id, code = "", -3
      end
    end
  end
  if code == 0 and unique_key ~= "" then
    local existing = redis.call("GET", unique_key)
    if existing then
      local status = redis.call("HGET", prefix .. string.sub(existing, 5), "status")
      if status == "queued" or status == "started" or status == "scheduled" then
        id, code = existing, 1
      end
    end
  end
  if code == 0 and max_queued > 0 and length >= max_queued then
    code = -2
  elseif code == 0 and redis.call("EXISTS", task_key) == 1 then
    code = -1
  elseif code == 0 then
    local due, priority = ARGV[i + 9], ARGV[i + 10]
    if string.sub(due, 1, 1) == "+" then
      due = now_ms + tonumber(string.sub(due, 2))
    elseif due ~= "" then
      due = tonumber(due)
      if due <= now_ms then due = "" end -- a start time that passed: queue it now
    end
    local fields = {"origin", handler, "status", due == "" and "queued" or "scheduled", "timeout", ARGV[i + 2],
      "ip", ARGV[i + 6], "created_at", now, "handle_worker", "", "data", ARGV[i + 1],
      "result_ttl", ARGV[i + 3], "attempts", "0", "ver", "1"}
    -- Stored only when they differ from their defaults (memory): failure_ttl, max_attempts, priority.
    if ARGV[i + 4] ~= "" then fields[#fields + 1] = "failure_ttl"; fields[#fields + 1] = ARGV[i + 4] end
    if ARGV[i + 8] ~= "" then fields[#fields + 1] = "max_attempts"; fields[#fields + 1] = ARGV[i + 8] end
    if priority ~= "" then fields[#fields + 1] = "priority"; fields[#fields + 1] = priority end
    if ARGV[i + 11] ~= "" then fields[#fields + 1] = "request_id"; fields[#fields + 1] = ARGV[i + 11] end
    if ARGV[i + 5] ~= "" then
      -- The queue ttl counts from when the task joins its queue.
      local drop_at = string.format("%d", (due == "" and now_ms or due) + math.floor(tonumber(ARGV[i + 5]) * 1000 + 0.5))
      fields[#fields + 1] = "ttl"; fields[#fields + 1] = ARGV[i + 5]
      fields[#fields + 1] = "drop_at"; fields[#fields + 1] = drop_at
      redis.call("ZADD", expiry_key, drop_at, id)
    end
    if unique_key ~= "" then
      redis.call("SET", unique_key, id)
      fields[#fields + 1] = "unique"; fields[#fields + 1] = unique_key
    end
    if due == "" then
      redis.call("RPUSH", queue_for(queue_key, priority), id)
      length = length + 1
    else
      fields[#fields + 1] = "scheduled_for"; fields[#fields + 1] = iso_from_ms(due)
      redis.call("ZADD", scheduled_key, due, id)
      if not earliest or due < earliest then earliest = due end
    end
    redis.call("HSET", task_key, unpack(fields))
  end
  if record_key ~= "" and (code == 0 or code == 1) then
    redis.call("SET", record_key, id .. " " .. digest .. " " .. code, "EX", record_ttl)
  end
  out[#out + 1] = id
  out[#out + 1] = code
end

if was_empty and length > 0 then
  redis.call("SPUBLISH", ARGV[2], "1")
end
if earliest then
  redis.call("SPUBLISH", ARGV[2], "due-in:" .. string.format("%d", earliest - now_ms))
end
return out
