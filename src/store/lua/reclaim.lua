#!lua flags=allow-oom
-- Take back the tasks a worker started but never heard of: a fetch whose answer was lost (the
-- connection dropped, or the answer came after the call's deadline) left them started under this
-- worker with nobody running them. Each goes back to the front of its queue, the attempt not
-- counted, as if the worker had shut down while running it. One atomic step.
-- @include task, queues, ending, limits, groups
--
-- KEYS[1] running zset   mq:wip:{TAG}<handler>
-- KEYS[2..4] the handler's queues: high, normal, low    mq:queue:{TAG}<handler>[:high|:low]
-- KEYS[5] limits hash   mq:limits:{TAG}<handler>  (a running limit: `go` is published when tasks go back)
-- KEYS[6..9] the handler's concurrency keys: ring, running, grouped, info (lib/groups.lua)
-- ARGV[1] worker name `host:port:pid` (field `handle_worker`)
-- ARGV[2] task key prefix `mq:msg:{TAG}`
-- ARGV[3] task channel prefix `mq:events:{TAG}`
-- ARGV[4] wake channel of the handler's queue
-- ARGV[5] JSON array of the ids this worker runs now (left alone)
-- ARGV[6] prefix of the concurrency keys' sets `mq:group:{TAG}<handler>:`
-- Returns the number of tasks put back.

local wip_key = KEYS[1]
local queues = {high = KEYS[2], normal = KEYS[3], low = KEYS[4]}
local worker, prefix, channels = ARGV[1], ARGV[2], ARGV[3]
local running = {}
for _, id in ipairs(cjson.decode(ARGV[5])) do running[id] = true end
local taken_back = 0
local groups = groups_of(KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], ARGV[6])

for _, id in ipairs(redis.call("ZRANGE", wip_key, 0, -1)) do
  if not running[id] then
    local task_key = prefix .. id_rest(id)
    local f = redis.call("HMGET", task_key, "status", "handle_worker", "priority", "concurrency_key", "group_seq")
    if f[1] == "started" and f[2] == worker then
      redis.call("ZREM", wip_key, id)
      redis.call("HINCRBY", task_key, "attempts", -1)
      back_to_queued(task_key, "its worker lost the answer that started it", channels .. id_rest(id))
      if f[4] then
        group_release(groups, f[4])
        group_push(groups, task_key, id, f[4], f[3], f[5]) -- back where it was in line
      else
        redis.call("LPUSH", queue_for(queues, f[3]), id)
      end
      taken_back = taken_back + 1
    end
  end
end

publish_snapshots()
if taken_back > 0 then redis.call("SPUBLISH", ARGV[4], "1") end
wake_if_running_limited(KEYS[5], ARGV[4], taken_back)
return taken_back
