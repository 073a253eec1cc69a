#!lua flags=allow-oom
-- Record how runs of started tasks of one handler ended: one atomic step for the batch. A task
-- that was deleted, or that is no longer this worker's (its lease lapsed and it was recovered), is
-- left alone: a late write never brings a deleted task back.
-- @include time, task, queues, ending, limits, groups
--
-- KEYS[1] running zset     mq:wip:{TAG}<handler>
-- KEYS[2] scheduled zset   mq:scheduled:{TAG}<handler>  (retries waiting for their time, score = due, epoch ms)
-- KEYS[3..5] the handler's queues: high, normal, low    mq:queue:{TAG}<handler>[:high|:low]
-- KEYS[6] counters hash    mq:stats:{TAG}<handler>      (runs ended, by outcome)
-- KEYS[7] limits hash      mq:limits:{TAG}<handler>     (a running limit: `go` is published when runs end)
-- KEYS[8..11] the handler's concurrency keys: ring, running, grouped, info (lib/groups.lua)
-- ARGV[1] worker name that started the tasks
-- ARGV[2] task key prefix `mq:msg:{TAG}`
-- ARGV[3] task channel prefix `mq:events:{TAG}`
-- ARGV[4] wake channel of the handler's queue
-- ARGV[5] result JSON of a canceled task
-- ARGV[6] prefix of the concurrency keys' sets `mq:group:{TAG}<handler>:`
-- ARGV[7...] eight per run (positional, "" when absent): id; outcome: "finished", "failed", "canceled"
--   (CancelTask stopped it), or "requeue" (the worker is shutting down: queue it again at the
--   front, without counting the attempt); result (JSON: {"stat":"OK","data":...} or
--   {"stat":"ERR_...","error":"..."}); cost (s); attempt (the run's attempt number, field
--   `attempts` when it started: a late end of an earlier run of the task, taken back by the sweep
--   and started again by the same worker, is left alone); for "failed": error (field
--   `last_error`) and retry_in (the delay before a retry, ms, absent when it must not be retried).
--   A task whose cancel was asked for ends canceled unless it finished. Last, "1" when the
--   caller wants the task's fields once recorded (a watcher in its process: store.ts).
-- `ended_at` and retry due times are Redis's own time. A recorded run of a task with a concurrency
-- key frees the key's slot (lib/groups.lua); the workers are woken if that gave the key a turn.
-- Returns {codes, fields}: per run, a CODE (scripts.ts): ENDED, RETRY, REQUEUED, CANCELED or
-- IGNORED; and per run, the task's fields as a JSON object when asked for and recorded, else "".

local wip_key, scheduled_key = KEYS[1], KEYS[2]
local queues = {high = KEYS[3], normal = KEYS[4], low = KEYS[5]}
local worker, prefix, channels = ARGV[1], ARGV[2], ARGV[3]
local now_ms, now = clock()
local out = {}
local wanted = {} -- per run: its fields JSON, or ""
local ended = {} -- ids to take out of the running set, in one ZREM
local requeued = false
local groups = groups_of(KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], ARGV[6])

-- Record one run that is the task's current one; returns its CODE.
local function record(run, task_key, channel, f)
  if run.outcome == "canceled" or (f.cancel_requested and run.outcome ~= "finished") then
    redis.call("HSET", task_key, "cost", run.cost)
    end_task(task_key, run.id, "canceled", now, ARGV[5], nil, channel)
    return CODE.CANCELED
  end
  if run.outcome == "requeue" then
    redis.call("HINCRBY", task_key, "attempts", -1)
    back_to_queued(task_key, "the worker shut down while running it", channel)
    if f.group then
      group_push(groups, task_key, run.id, f.group, f.priority, f.group_seq) -- back where it was in line
    else
      redis.call("LPUSH", queue_for(queues, f.priority), run.id)
    end
    requeued = true
    return CODE.REQUEUED
  end
  redis.call("HSET", task_key, "cost", run.cost)
  if run.outcome == "failed" then
    if run.retry_in and (tonumber(f.attempts) or 1) < (tonumber(f.max_attempts) or 1) then
      back_to_queued(task_key, run.error, channel)
      redis.call("ZADD", scheduled_key, now_ms + tonumber(run.retry_in), run.id)
      count("retried")
      return CODE.RETRY
    end
    end_task(task_key, run.id, "failed", now, run.result, run.error, channel, run.cost)
    return CODE.ENDED
  end
  redis.call("HSET", task_key, "status", "finished", "ended_at", now, "result", run.result,
    "ver", (tonumber(f.ver) or 0) + 1)
  if f.cancel_requested then redis.call("HDEL", task_key, "cancel_requested") end -- it finished before the cancel
  redis.call("PEXPIRE", task_key, ttl_ms(f.result_ttl, 86400))
  release_unique(f.unique, run.id)
  publish_snapshot(task_key, channel)
  count("finished", run.cost)
  return CODE.ENDED
end

for i = 7, #ARGV, 8 do
  local run = {id = ARGV[i], outcome = ARGV[i + 1], result = ARGV[i + 2], cost = ARGV[i + 3], attempt = ARGV[i + 4],
    error = ARGV[i + 5], retry_in = ARGV[i + 6] ~= "" and ARGV[i + 6] or nil}
  local task_key, channel = prefix .. id_rest(run.id), channels .. id_rest(run.id)
  local v = redis.call("HMGET", task_key, "status", "handle_worker", "result_ttl", "unique", "attempts", "max_attempts",
    "ver", "cancel_requested", "priority", "concurrency_key", "group_seq")
  local f = {status = v[1], worker = v[2], result_ttl = v[3], unique = v[4], attempts = v[5], max_attempts = v[6],
    ver = v[7], cancel_requested = v[8], priority = v[9], group = v[10], group_seq = v[11]}
  local code = CODE.IGNORED
  if not f.status then
    ended[#ended + 1] = run.id
  elseif f.status == "started" and f.worker == worker and f.attempts == run.attempt then
    ended[#ended + 1] = run.id
    if f.group then group_release(groups, f.group) end -- before a requeue puts the task back in line
    code = record(run, task_key, channel, f)
  end
  out[#out + 1] = code
  wanted[#wanted + 1] = (ARGV[i + 7] == "1" and code ~= CODE.IGNORED) and fields_json(task_key) or ""
end

call_chunked("ZREM", wip_key, ended)
publish_snapshots()
add_counts(KEYS[6], now_ms)
if requeued or group_woke(groups) then
  redis.call("SPUBLISH", ARGV[4], "1")
end
wake_if_running_limited(KEYS[7], ARGV[4], #ended)
return {out, wanted}
