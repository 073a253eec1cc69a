-- Take up to N queued tasks of one handler and mark them started: one atomic step. Priorities in
-- order: the `:high` list, the normal one, the `:low` one (an empty list costs one LPOP per call).
-- Tasks deleted while queued are skipped; tasks whose queue deadline passed fail as expired.
--
-- KEYS[1] queue list    mq:queue:{TAG}<handler>
-- KEYS[2] running zset  mq:wip:{TAG}<handler>     (score = lease deadline, epoch ms)
-- KEYS[3] expiry zset   mq:expiry:{TAG}<handler>  (queue deadlines, epoch ms)
-- KEYS[4] counters hash mq:stats:{TAG}<handler>   (runs ended, by outcome)
-- ARGV[1] most tasks to take
-- ARGV[2] worker name `host:port:pid` (field `handle_worker`)
-- ARGV[3] task key prefix `mq:msg:{TAG}`
-- ARGV[4] task channel prefix `mq:events:{TAG}`
-- ARGV[5] lease, ms: a started task is recovered if its lease is not renewed within this time
-- ARGV[6] result JSON stored on a task that expired in its queue
-- Times (started_at, lease deadlines, queue deadlines) are Redis's own (clock() in lib.lua).
-- Returns {id1, {field, value, ...}, id2, {...}, ...} for the tasks now started.

local queue_key, wip_key, expiry_key = KEYS[1], KEYS[2], KEYS[3]
local want = tonumber(ARGV[1])
local now_ms, now = clock()
local out = {}
local leases = {} -- score, id, score, id, ... for one ZADD
local taken = 0

local lists = {queue_key .. ":high", queue_key, queue_key .. ":low"}
local list = 1
while taken < want and list <= #lists do
  local id = redis.call("LPOP", lists[list])
  if not id then
    list = list + 1 -- this priority is drained: the next one
  else
    local rest = string.sub(id, 5)
    local task_key = ARGV[3] .. rest
    local f = redis.call("HMGET", task_key, "status", "drop_at", "attempts", "ver", "progress")
    if f[1] == "queued" then
      if f[2] then redis.call("ZREM", expiry_key, id) end
      if f[2] and tonumber(f[2]) and tonumber(f[2]) < now_ms then
        redis.call("HSET", task_key, "cost", "0")
        fail_task(task_key, id, now, ARGV[6], "expired in its queue", ARGV[4] .. rest)
      else
        redis.call("HSET", task_key, "status", "started", "handle_worker", ARGV[2], "started_at", now, "cost", "0",
          "attempts", (tonumber(f[3]) or 0) + 1, "ver", (tonumber(f[4]) or 0) + 1)
        if f[2] then redis.call("HDEL", task_key, "drop_at") end -- the queue ttl covers the first wait only
        if f[5] then redis.call("HDEL", task_key, "progress", "progress_message") end -- a new run starts at 0
        leases[#leases + 1] = now_ms + tonumber(ARGV[5])
        leases[#leases + 1] = id
        publish_snapshot(task_key, ARGV[4] .. rest)
        out[#out + 1] = id
        out[#out + 1] = redis.call("HGETALL", task_key)
        taken = taken + 1
      end
    end
  end
end
call_chunked("ZADD", wip_key, leases)
publish_snapshots()
add_counts(KEYS[4])
return out
