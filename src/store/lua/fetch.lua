#!lua flags=allow-oom
-- Take up to N queued tasks of one handler and mark them started: one atomic step. Priorities in
-- order: high, normal, low (an empty list costs one LPOP per call). Tasks with a concurrency key
-- are taken from their keys in turn (lib/groups.lua: round robin, each key at most
-- max_running_per_key running); the two sources alternate, one task each, while both have tasks,
-- across fetches too (without grouped tasks: one EXISTS per call). Tasks deleted while queued are
-- skipped; tasks whose queue deadline passed fail as expired. The handler's limits (lib/limits.lua)
-- bound how many start: none while it is paused, at most max_running running, at most the whole
-- tokens of its rate's bucket; the rest stay queued and the answer says why and, for a rate, when
-- to ask again.
-- @include time, task, ending, queues, limits, groups
--
-- KEYS[1..3] the handler's queues: high, normal, low    mq:queue:{TAG}<handler>[:high|:low]
-- KEYS[4] running zset   mq:wip:{TAG}<handler>     (score = lease deadline, epoch ms)
-- KEYS[5] expiry zset    mq:expiry:{TAG}<handler>  (queue deadlines, epoch ms)
-- KEYS[6] counters hash  mq:stats:{TAG}<handler>   (runs ended, by outcome)
-- KEYS[7] limits hash    mq:limits:{TAG}<handler>  (rate, burst, max_running, max_running_per_key, paused)
-- KEYS[8] bucket hash    mq:bucket:{TAG}<handler>  (the rate's tokens: tokens, at)
-- KEYS[9..12] the handler's concurrency keys: ring, running, grouped, info (lib/groups.lua)
-- ARGV[1] most tasks to take
-- ARGV[2] worker name `host:port:pid` (field `handle_worker`)
-- ARGV[3] task key prefix `mq:msg:{TAG}`
-- ARGV[4] task channel prefix `mq:events:{TAG}`
-- ARGV[5] lease, ms: a started task is recovered if its lease is not renewed within this time
-- ARGV[6] result JSON stored on a task that expired in its queue
-- ARGV[7] prefix of the concurrency keys' sets `mq:group:{TAG}<handler>:`
-- Times (started_at, lease deadlines, queue deadlines) are Redis's own.
-- Returns {{id1, fields1, id2, fields2, ...} for the tasks now started, hold, wait}, each task's
-- fields as one JSON object (lib/task.lua fields_json: one string to parse, not two per field); hold
-- is a HOLD (scripts.ts), NONE unless a limit or a pause kept queued tasks from starting; wait is,
-- for RATE, the ms until the bucket has a whole token, else -1 (ask again when woken: `go`).

local lists = {KEYS[1], KEYS[2], KEYS[3]}
local queues = {high = KEYS[1], normal = KEYS[2], low = KEYS[3]}
local wip_key, expiry_key = KEYS[4], KEYS[5]
local want = tonumber(ARGV[1])
local worker, prefix, channels = ARGV[2], ARGV[3], ARGV[4]
local now_ms, now = clock()
local out = {}
local leases = {} -- score, id, score, id, ... for one ZADD
local taken = 0
local limits = read_limits(KEYS[7])
local hold, wait_ms
want, hold, wait_ms = allowance(limits, KEYS[8], wip_key, now_ms, want)
local groups = groups_of(KEYS[7], KEYS[9], KEYS[10], KEYS[11], KEYS[12], ARGV[7])
groups.cap = limits.max_running_per_key -- read with the other limits

-- Start one task taken from a queue; false if it is gone, no longer queued, or expired (failed now).
local function start(id)
  local task_key, channel = prefix .. id_rest(id), channels .. id_rest(id)
  -- One read of the whole hash: the checks below, and the answer (the fields as this start leaves them).
  local f = fields_table(redis.call("HGETALL", task_key))
  if f.status ~= "queued" then return false end
  local drop_at = f.drop_at
  if drop_at then redis.call("ZREM", expiry_key, id) end
  if drop_at and tonumber(drop_at) and tonumber(drop_at) < now_ms then
    redis.call("HSET", task_key, "cost", "0")
    end_task(task_key, id, "failed", now, ARGV[6], "expired in its queue", channel)
    return false
  end
  f.status, f.handle_worker, f.started_at, f.cost = "started", worker, now, "0"
  f.attempts = tostring((tonumber(f.attempts) or 0) + 1)
  f.ver = tostring((tonumber(f.ver) or 0) + 1)
  redis.call("HSET", task_key, "status", "started", "handle_worker", worker, "started_at", now, "cost", "0",
    "attempts", f.attempts, "ver", f.ver)
  if drop_at then -- the queue ttl covers the first wait only
    redis.call("HDEL", task_key, "drop_at")
    f.drop_at = nil
  end
  if f.progress then -- a new run starts at 0
    redis.call("HDEL", task_key, "progress", "progress_message")
    f.progress, f.progress_message = nil, nil
  end
  leases[#leases + 1] = now_ms + tonumber(ARGV[5])
  leases[#leases + 1] = id
  publish_snapshot(task_key, channel)
  out[#out + 1] = id
  out[#out + 1] = cjson.encode(f)
  taken = taken + 1
  return true
end

local list = 1
-- The keys' ring may have a task to start; the next take is the ring's (a drained source does not
-- spend a turn: the turn passes on a task taken).
local ring_left, ring_turn = group_first_turn(groups)
while taken < want and (list <= #lists or ring_left) do
  if ring_left and (list > #lists or ring_turn) then
    local id, key, running = group_take(groups)
    if id then
      group_taken(groups, key, running, start(id))
      ring_turn = false
    else
      ring_left = false -- no key may start a task now
    end
  else
    local id = redis.call("LPOP", lists[list])
    if id then
      start(id)
      ring_turn = true
    else
      list = list + 1 -- this priority is drained: the next one
    end
  end
end
group_next_turn(groups, ring_turn)
call_chunked("ZADD", wip_key, leases)
take_tokens(limits, KEYS[8], now_ms, taken)
publish_snapshots()
add_counts(KEYS[6], now_ms)
-- Held back only if tasks are left to hold (with an empty queue, the next create wakes the workers).
if hold ~= HOLD.NONE and (taken < want or queued_count(queues) + group_queued(groups) == 0) then
  hold, wait_ms = HOLD.NONE, -1
end
return {out, hold, wait_ms}
