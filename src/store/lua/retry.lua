#!lua
-- Put a failed or canceled task back at the end of its queue for at least one more run. Not run
-- while Redis is out of memory (no `allow-oom`): like a create, it adds work.
-- @include time, task, queues, publish, groups
--
-- KEYS[1] task hash   mq:msg:{TAG}<id minus TAG>
-- KEYS[2..4] the handler's queues: high, normal, low    mq:queue:{TAG}<handler>[:high|:low]
-- KEYS[5] limits hash  mq:limits:{TAG}<handler>  (field max_running_per_key)
-- KEYS[6..9] the handler's concurrency keys: ring, running, grouped, info (lib/groups.lua)
-- ARGV[1] task id
-- ARGV[2] task channel
-- ARGV[3] wake channel of the handler's queue
-- ARGV[4] task key prefix `mq:msg:{TAG}` (to read a unique twin)
-- ARGV[5] prefix of the concurrency keys' sets `mq:group:{TAG}<handler>:`
-- Returns {CODE} (scripts.ts): {QUEUED, {field, value, ...}} (the task as the retry left it), {NOT_FOUND}, {WRONG_STATUS, status} (not failed or
-- canceled), {UNIQUE_TAKEN, id} (a unique task whose twin, that id, is queued or running).

local task_key, id = KEYS[1], ARGV[1]
local queues = {high = KEYS[2], normal = KEYS[3], low = KEYS[4]}
local f = redis.call("HMGET", task_key, "status", "unique", "attempts", "max_attempts", "priority", "concurrency_key")
if not f[1] then return {CODE.NOT_FOUND} end
if f[1] ~= "failed" and f[1] ~= "canceled" then return {CODE.WRONG_STATUS, f[1]} end
if f[2] then
  local holder = redis.call("GET", f[2])
  if holder and holder ~= id then
    local status = redis.call("HGET", ARGV[4] .. id_rest(holder), "status")
    if status == "queued" or status == "started" or status == "scheduled" then return {CODE.UNIQUE_TAKEN, holder} end
  end
  redis.call("SET", f[2], id)
end
local attempts = tonumber(f[3]) or 0
local max_attempts = math.max(tonumber(f[4]) or 1, attempts + 1)
-- drop_at: the queue ttl covered the first wait only (a task that expired in its queue keeps it).
-- lost: a retried poison task gets a fresh count of lost workers.
redis.call("HDEL", task_key, "started_at", "ended_at", "result", "cost", "cancel_requested", "drop_at", "lost")
local _, now = clock()
redis.call("HSET", task_key, "status", "queued", "handle_worker", "", "enqueued_at", now,
  "max_attempts", max_attempts)
redis.call("HINCRBY", task_key, "ver", 1)
redis.call("PERSIST", task_key)
local was_empty = queued_count(queues) == 0
local groups = groups_of(KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], ARGV[5])
if f[6] then
  group_push(groups, task_key, id, f[6], f[5], nil) -- at the end of its key's line
  was_empty = was_empty and group_woke(groups) -- and no key had a turn either
else
  redis.call("RPUSH", queue_for(queues, f[5]), id)
end
if was_empty then redis.call("SPUBLISH", ARGV[3], "1") end
publish_snapshot(task_key, ARGV[2])
publish_snapshots()
return {CODE.QUEUED, redis.call("HGETALL", task_key)}
