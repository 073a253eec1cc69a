#!lua flags=allow-oom
-- Recovery and promotion for one handler: one atomic step, safe to run at any time by anyone.
-- 1. Running tasks whose lease lapsed (their worker died or stalled past its timeout) go back to the
--    queue if they have attempts left, otherwise fail with ERR_WORKER_LOST. A task whose worker
--    was lost `max_losses` times fails with ERR_POISON_TASK whatever attempts it has left: it is
--    likely what kills its workers, and recovering it again would kill the next one.
-- 2. Retries and delayed tasks whose time has come move from the scheduled set to the queue.
-- 3. Queued tasks whose queue ttl passed fail with ERR_MSG_EXPIRED.
-- Every deadline is compared with Redis's own clock. A task with a concurrency key goes back to
-- its key's set (a recovered one where it was in line) and a recovered or lost one frees its key's
-- slot (lib/groups.lua).
-- @include time, task, queues, ending, limits, groups
--
-- KEYS[1] running zset     mq:wip:{TAG}<handler>
-- KEYS[2..4] the handler's queues: high, normal, low    mq:queue:{TAG}<handler>[:high|:low]
-- KEYS[5] scheduled zset   mq:scheduled:{TAG}<handler>
-- KEYS[6] expiry zset      mq:expiry:{TAG}<handler>
-- KEYS[7] counters hash    mq:stats:{TAG}<handler>  (runs ended, by outcome)
-- KEYS[8] limits hash      mq:limits:{TAG}<handler> (a running limit: `go` is published when runs end)
-- KEYS[9..12] the handler's concurrency keys: ring, running, grouped, info (lib/groups.lua)
-- ARGV[1] task key prefix `mq:msg:{TAG}`
-- ARGV[2] task channel prefix `mq:events:{TAG}`
-- ARGV[3] wake channel of the handler's queue
-- ARGV[4] result JSON for a task whose worker was lost
-- ARGV[5] result JSON for a task that expired in its queue
-- ARGV[6] most entries to handle per set in this call
-- ARGV[7] "1" to recover lapsed leases, "0" to leave them (the caller's connection came back
--         less than a lease ago: workers may not have renewed yet, see Store.sweep)
-- ARGV[8] result JSON of a canceled task (a lost task whose cancel was asked for ends canceled)
-- ARGV[9] result JSON for a poison task
-- ARGV[10] max_losses: a task whose worker was lost this many times is failed as poison
-- ARGV[11] prefix of the concurrency keys' sets `mq:group:{TAG}<handler>:`
-- Returns {recovered (requeued), lost (failed), promoted, expired, ms from now until the earliest
-- remaining due time in the scheduled set (0 if overdue) or -1 if it is empty}.

local wip_key, scheduled_key, expiry_key = KEYS[1], KEYS[5], KEYS[6]
local queues = {high = KEYS[2], normal = KEYS[3], low = KEYS[4]}
-- Nothing running, scheduled or expiring: nothing to do (the common, idle case: one call).
if redis.call("EXISTS", wip_key, scheduled_key, expiry_key) == 0 then
  return {0, 0, 0, 0, -1}
end
local now_ms, now_iso = clock()
local prefix, channels = ARGV[1], ARGV[2]
local limit = tonumber(ARGV[6])
local max_losses = tonumber(ARGV[10])
local recovered, lost, promoted, expired = 0, 0, 0, 0
local groups = groups_of(KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], ARGV[11])

if ARGV[7] == "1" then
  for _, id in ipairs(redis.call("ZRANGEBYSCORE", wip_key, "-inf", "(" .. now_ms, "LIMIT", 0, limit)) do
    redis.call("ZREM", wip_key, id)
    local task_key, channel = prefix .. id_rest(id), channels .. id_rest(id)
    local f = redis.call("HMGET", task_key, "status", "attempts", "max_attempts", "cancel_requested", "priority",
      "concurrency_key", "group_seq")
    if f[1] == "started" then
      if f[6] then group_release(groups, f[6]) end
      local losses = redis.call("HINCRBY", task_key, "lost", 1)
      if f[4] then
        end_task(task_key, id, "canceled", now_iso, ARGV[8], nil, channel)
        lost = lost + 1
      elseif losses >= max_losses then
        end_task(task_key, id, "failed", now_iso, ARGV[9],
          "its worker was lost " .. losses .. " times while running it: failed as a poison task", channel)
        lost = lost + 1
      elseif (tonumber(f[2]) or 1) < (tonumber(f[3]) or 1) then
        back_to_queued(task_key, "the worker running it was lost", channel)
        if f[6] then
          group_push(groups, task_key, id, f[6], f[5], f[7]) -- back where it was in line
        else
          redis.call("LPUSH", queue_for(queues, f[5]), id)
        end
        count("retried")
        recovered = recovered + 1
      else
        end_task(task_key, id, "failed", now_iso, ARGV[4], "the worker running it was lost", channel)
        lost = lost + 1
      end
    end
  end
end

for _, id in ipairs(redis.call("ZRANGEBYSCORE", scheduled_key, "-inf", now_ms, "LIMIT", 0, limit)) do
  redis.call("ZREM", scheduled_key, id)
  local task_key, channel = prefix .. id_rest(id), channels .. id_rest(id)
  local f = redis.call("HMGET", task_key, "status", "priority", "concurrency_key")
  if f[1] == "scheduled" then -- a delayed task is due: it joins its queue now
    redis.call("HSET", task_key, "status", "queued", "enqueued_at", now_iso)
    redis.call("HINCRBY", task_key, "ver", 1)
    publish_snapshot(task_key, channel)
  end
  if (f[1] == "queued" or f[1] == "scheduled") and f[3] then
    group_push(groups, task_key, id, f[3], f[2], nil)
    promoted = promoted + 1
  elseif f[1] == "queued" or f[1] == "scheduled" then
    redis.call("RPUSH", queue_for(queues, f[2]), id)
    promoted = promoted + 1
  end
end

for _, id in ipairs(redis.call("ZRANGEBYSCORE", expiry_key, "-inf", now_ms, "LIMIT", 0, limit)) do
  redis.call("ZREM", expiry_key, id)
  local task_key, channel = prefix .. id_rest(id), channels .. id_rest(id)
  local f = redis.call("HMGET", task_key, "status", "priority", "concurrency_key")
  if f[1] == "queued" then
    if f[3] then
      group_remove(groups, f[3], id)
    else
      redis.call("LREM", queue_for(queues, f[2]), 1, id)
    end
    redis.call("ZREM", scheduled_key, id)
    redis.call("HSET", task_key, "cost", "0")
    end_task(task_key, id, "failed", now_iso, ARGV[5], "expired in its queue", channel)
    expired = expired + 1
  end
end

publish_snapshots()
add_counts(KEYS[7], now_ms)
if recovered + promoted > 0 or group_woke(groups) then
  redis.call("SPUBLISH", ARGV[3], "1")
end
wake_if_running_limited(KEYS[8], ARGV[3], recovered + lost)
local next_due = redis.call("ZRANGE", scheduled_key, 0, 0, "WITHSCORES")
return {recovered, lost, promoted, expired, next_due[2] and math.max(0, tonumber(next_due[2]) - now_ms) or -1}
