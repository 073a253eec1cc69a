-- Take up to N queued tasks of one handler and mark them started: one atomic step.
-- Tasks deleted while queued are skipped; tasks whose queue deadline passed fail as expired.
--
-- KEYS[1] queue list    mq:queue:{TAG}<handler>
-- KEYS[2] running zset  mq:wip:{TAG}<handler>   (score = deadline, epoch ms)
-- ARGV[1] most tasks to take
-- ARGV[2] worker name `host:port:pid` (field `handle_worker`)
-- ARGV[3] now, ISO-8601 with microseconds
-- ARGV[4] now, epoch ms
-- ARGV[5] task key prefix `mq:msg:{TAG}`
-- ARGV[6] task channel prefix `mq:events:{TAG}`
-- ARGV[7] grace added to a task's timeout for its deadline in the running set, ms
-- ARGV[8] result JSON stored on a task that expired in its queue
-- Returns {id1, {field, value, ...}, id2, {...}, ...} for the tasks now started.

local queue_key, wip_key = KEYS[1], KEYS[2]
local want = tonumber(ARGV[1])
local now_ms = tonumber(ARGV[4])
local out = {}
local taken = 0

while taken < want do
  local id = redis.call("LPOP", queue_key)
  if not id then break end
  local rest = string.sub(id, 5)
  local task_key = ARGV[5] .. rest
  local f = redis.call("HMGET", task_key, "status", "timeout", "drop_at", "failure_ttl", "unique")
  if f[1] == "queued" then
    if f[3] and tonumber(f[3]) and tonumber(f[3]) < now_ms then
      redis.call("HSET", task_key, "status", "failed", "ended_at", ARGV[3], "cost", "0", "result", ARGV[8])
      redis.call("HINCRBY", task_key, "ver", 1)
      redis.call("PEXPIRE", task_key, ttl_ms(f[4], 604800))
      release_unique(f[5], id)
      publish_snapshot(task_key, ARGV[6] .. rest)
    else
      redis.call("HSET", task_key, "status", "started", "handle_worker", ARGV[2], "started_at", ARGV[3], "cost", "0")
      redis.call("HINCRBY", task_key, "ver", 1)
      local timeout_ms = math.floor((tonumber(f[2]) or 180) * 1000)
      redis.call("ZADD", wip_key, now_ms + timeout_ms + tonumber(ARGV[7]), id)
      publish_snapshot(task_key, ARGV[6] .. rest)
      out[#out + 1] = id
      out[#out + 1] = redis.call("HGETALL", task_key)
      taken = taken + 1
    end
  end
end
return out
