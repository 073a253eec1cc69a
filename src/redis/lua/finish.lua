-- Record how runs of started tasks of one handler ended: one atomic step for the batch. A task
-- that was deleted, or that is no longer this worker's (its lease lapsed and it was recovered), is
-- left alone: a late write never brings a deleted task back.
--
-- KEYS[1] running zset     mq:wip:{TAG}<handler>
-- KEYS[2] scheduled zset   mq:scheduled:{TAG}<handler>  (retries waiting for their time, score = due, epoch ms)
-- KEYS[3] queue list       mq:queue:{TAG}<handler>
-- KEYS[4] counters hash    mq:stats:{TAG}<handler>      (runs ended, by outcome)
-- ARGV[1] worker name that started the tasks
-- ARGV[2] task key prefix `mq:msg:{TAG}`
-- ARGV[3] task channel prefix `mq:events:{TAG}`
-- ARGV[4] wake channel of the handler's queue
-- ARGV[5] result JSON of a canceled task
-- Then 7 values per task:
--   id; outcome: "finished", "failed", "canceled" (CancelTask stopped it), or "requeue" (the
--   worker is shutting down: queue it again at the front, without counting the attempt); a task
--   whose cancel was asked for ends canceled unless it finished; result JSON ({"stat":"OK","data":...} or
--   {"stat":"ERR_...","error":"..."}); cost (s); for "failed": the delay before a retry (ms, from
--   now by Redis's clock) or "" when it must not be retried; for "failed": the error text (field
--   `last_error`); the run's attempt number (field `attempts` when it started): a late end of an
--   earlier run of the task, taken back by the sweep and started again by the same worker, is left alone
-- `ended_at` and retry due times are Redis's own time (clock() in lib.lua).
-- Returns, per task: 1 ended, 2 scheduled for a retry, 3 requeued, 4 ended canceled, 0 left alone.

local wip_key, scheduled_key, queue_key = KEYS[1], KEYS[2], KEYS[3]
local worker, prefix, channels = ARGV[1], ARGV[2], ARGV[3]
local now_ms, now = clock()
local out = {}
local ended = {} -- ids to take out of the running set, in one ZREM
local requeued = false

for i = 6, #ARGV, 7 do
  local id, outcome, result, cost, retry_in, error_text = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local attempt = ARGV[i + 6]
  local rest = string.sub(id, 5)
  local task_key, channel = prefix .. rest, channels .. rest
  local f = redis.call("HMGET", task_key, "status", "handle_worker", "result_ttl", "unique", "attempts", "max_attempts",
    "ver", "cancel_requested", "priority")
  local code = 0
  if not f[1] then
    ended[#ended + 1] = id
  elseif f[1] == "started" and f[2] == worker and f[5] == attempt then
    ended[#ended + 1] = id
    if outcome == "canceled" or (f[8] and outcome ~= "finished") then
      redis.call("HSET", task_key, "cost", cost)
      cancel_task(task_key, id, now, ARGV[5], channel)
      code = 4
    elseif outcome == "requeue" then
      redis.call("HINCRBY", task_key, "attempts", -1)
      back_to_queued(task_key, "the worker shut down while running it", channel)
      redis.call("LPUSH", queue_for(queue_key, f[9]), id)
      requeued = true
      code = 3
    elseif outcome == "failed" then
      redis.call("HSET", task_key, "cost", cost)
      if retry_in ~= "" and (tonumber(f[5]) or 1) < (tonumber(f[6]) or 1) then
        back_to_queued(task_key, error_text, channel)
        redis.call("ZADD", scheduled_key, now_ms + tonumber(retry_in), id)
        count("retried")
        code = 2
      else
        fail_task(task_key, id, now, result, error_text, channel)
        code = 1
      end
    else
      redis.call("HSET", task_key, "status", "finished", "ended_at", now, "cost", cost, "result", result,
        "ver", (tonumber(f[7]) or 0) + 1)
      if f[8] then redis.call("HDEL", task_key, "cancel_requested") end -- it finished before the cancel
      redis.call("PEXPIRE", task_key, ttl_ms(f[3], 86400))
      release_unique(f[4], id)
      publish_snapshot(task_key, channel)
      count("finished")
      code = 1
    end
  end
  out[#out + 1] = code
end

call_chunked("ZREM", wip_key, ended)
publish_snapshots()
add_counts(KEYS[4])
if requeued then
  redis.call("SPUBLISH", ARGV[4], "1")
end
return out
