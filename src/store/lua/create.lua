#!lua
-- Create tasks of one handler and queue them, in order: one atomic step for the whole batch.
-- @include time, task, queues, publish, limits, groups
--
-- KEYS[1..3] the handler's queues: high, normal, low    mq:queue:{TAG}<handler>[:high|:low]
-- KEYS[4] expiry zset     mq:expiry:{TAG}<handler>     (queue deadlines, epoch ms; tasks with a ttl)
-- KEYS[5] scheduled zset  mq:scheduled:{TAG}<handler>  (delayed tasks and retries, score = due, epoch ms)
-- KEYS[6] limits hash  mq:limits:{TAG}<handler>  (field max_running_per_key)
-- KEYS[7..10] the handler's concurrency keys: ring, running, grouped, info (lib/groups.lua)
-- KEYS[11] running zset  mq:wip:{TAG}<handler>     (score = lease deadline, epoch ms; for claims)
-- ARGV[1] handler path (field `origin`)
-- ARGV[2] wake channel of the handler's queue
-- ARGV[3] task key prefix `mq:msg:{TAG}`
-- ARGV[4] most tasks the queue may hold, 0 for no limit
-- ARGV[5] life of idempotency records (s)
-- ARGV[6] prefix of the concurrency keys' sets `mq:group:{TAG}<handler>:`
-- ARGV[7] most tasks the calling process's worker may claim (0: none), see "Claims" below
-- ARGV[8] that worker's name `host:port:pid`; ARGV[9] its lease, ms
-- ARGV[10] task channel prefix `mq:events:{TAG}`
-- ARGV[11...] one task each, a JSON object of strings: id (20 hex, the first 4 are TAG), data
--   (params JSON), timeout (s), result_ttl (s), ip; and when not the default: failure_ttl (s), ttl
--   (s, queue ttl), unique (the unique lock's key, mq:unique:{TAG}<handler>:<params digest>),
--   max_attempts, due ("+<ms>": a delay from now; "<epoch ms>": a start time, queued now if it has
--   passed), priority ("1" or "-1"), request_id, record (the idempotency record's key,
--   mq:idem:{TAG}<handler>:<key>) with digest (the params digest), concurrency_key (queued in
--   its key's set, lib/groups.lua, instead of the priority lists), schedule_id and schedule_tick
--   (the ISO time of the schedule's tick) for a schedule's task
-- Times (created_at, due times, the queue deadline `drop_at` = due or now + ttl) are Redis's own;
-- enqueued_at is stored only when it differs from created_at.
-- Returns {{id, code, id, code, ...}, {id, fields, ...}}: per task, {id, code} (CODE, from
-- scripts.ts): NEW (claimed or not); UNIQUE_HIT (id is the live twin's);
-- REPLAYED_NEW or REPLAYED_UNIQUE_HIT when the idempotency key was used before with the same params
-- (id is what that create answered); ID_TAKEN (draw another); QUEUE_FULL (queued tasks, grouped
-- ones too, reached the most); KEY_REUSED (the key was used before with other params; id is "").
-- An idempotency record is written with the answer (NEW, UNIQUE_HIT), in this same step, so a
-- create whose reply was lost is answered the same when it is sent again, for as long as the record
-- lives (even after its task ended, expired or was deleted: the task is never created twice).
-- The handler's workers are woken only when its queues were all empty (and, for a grouped task, no
-- key had a turn): a worker that saw them empty waits for that wake-up, one that did not is still
-- draining them. A delayed task is SCHEDULED, and the workers hear `due-in:<ms>` (how long until
-- the batch's earliest due time) on the wake channel: a worker whose promotion timer for the
-- handler rings later sets it sooner.
-- Claims: a create made in a process whose worker has idle slots for the handler may start the
-- task at once, in this same step, instead of queueing it (it skips a wake-up and a fetch: two
-- network hops). Only while no task of the handler waits (its queues, and its concurrency keys,
-- are empty: no older task is passed over), the handler has no limits that a fetch would apply
-- (pause, rate, running limit), and only tasks due now, without a queue ttl or a concurrency
-- key. A claimed task is stored as the fetch would leave it: started by that worker, attempt 1,
-- leased in the running set (a process that dies before running it loses it to the sweep, as any
-- started task). Claims stop at ARGV[7] or at the first task that is queued instead.

local queues = {high = KEYS[1], normal = KEYS[2], low = KEYS[3]}
local expiry_key, scheduled_key = KEYS[4], KEYS[5]
local handler, wake_channel, prefix = ARGV[1], ARGV[2], ARGV[3]
local max_queued, record_ttl = tonumber(ARGV[4]), ARGV[5]
local groups = groups_of(KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], ARGV[6])
local now_ms, now = clock()
local length = queued_count(queues)
local was_empty = length == 0
local claims = tonumber(ARGV[7])
if claims > 0 then
  local limits = read_limits(KEYS[6])
  if not was_empty or limits.paused or limits.rate > 0 or limits.max_running > 0 or group_queued(groups) > 0 then
    claims = 0
  end
end
local claimed = {} -- id, fields JSON, ... of the tasks claimed
local pushed = false -- a task joined the priority lists
if max_queued > 0 then length = length + group_queued(groups) end -- grouped tasks count toward the most too
local earliest = nil -- earliest due time among this batch's delayed tasks
local out = {}

-- What an idempotency record says of this create: nil (no record), or the answer to repeat.
local function replay(t)
  if not t.record then return nil end
  local record = redis.call("GET", t.record)
  if not record then return nil end
  local first, digest, first_code = string.match(record, "^(%S+) (%S+) (%-?%d+)$")
  if digest ~= t.digest then return "", CODE.KEY_REUSED end
  return first, tonumber(first_code) == CODE.NEW and CODE.REPLAYED_NEW or CODE.REPLAYED_UNIQUE_HIT
end

-- The live twin of a unique create, if any.
local function twin(t)
  if not t.unique then return nil end
  local existing = redis.call("GET", t.unique)
  if not existing then return nil end
  local status = redis.call("HGET", prefix .. id_rest(existing), "status")
  if status == "queued" or status == "started" or status == "scheduled" then return existing end
  return nil
end

-- Store and queue (or schedule) one new task.
local function store(t, task_key)
  local due = t.due
  if due and string.sub(due, 1, 1) == "+" then
    due = now_ms + tonumber(string.sub(due, 2))
  elseif due then
    due = tonumber(due)
    if due <= now_ms then due = nil end -- a start time that has passed: queue it now
  end
  local fields = {"origin", handler, "status", due and "scheduled" or "queued", "timeout", t.timeout,
    "ip", t.ip, "created_at", now, "handle_worker", "", "data", t.data,
    "result_ttl", t.result_ttl, "attempts", "0", "ver", "1"}
  local function add(name, value)
    if value then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  -- Stored only when they differ from their defaults (memory).
  add("failure_ttl", t.failure_ttl)
  add("max_attempts", t.max_attempts)
  add("priority", t.priority)
  add("request_id", t.request_id)
  add("schedule_id", t.schedule_id)
  add("schedule_tick", t.schedule_tick)
  add("concurrency_key", t.concurrency_key)
  if t.ttl then
    -- The queue ttl counts from when the task joins its queue.
    local drop_at = string.format("%d", (due or now_ms) + math.floor(tonumber(t.ttl) * 1000 + 0.5))
    add("ttl", t.ttl)
    add("drop_at", drop_at)
    redis.call("ZADD", expiry_key, drop_at, t.id)
  end
  if t.unique then
    redis.call("SET", t.unique, t.id)
    add("unique", t.unique)
  end
  if due then
    add("scheduled_for", iso_from_ms(due))
    redis.call("ZADD", scheduled_key, due, t.id)
    if not earliest or due < earliest then earliest = due end
  end
  if claims > 0 and not due and not t.ttl and not t.concurrency_key then
    -- Claimed: started now by the calling process's worker (as fetch.lua's start).
    claims = claims - 1
    fields[4], fields[12], fields[18] = "started", ARGV[8], "1" -- status, handle_worker, attempts
    fields[20] = "2" -- ver: created, then started
    add("started_at", now)
    add("cost", "0")
    redis.call("HSET", task_key, unpack(fields))
    redis.call("ZADD", KEYS[11], now_ms + tonumber(ARGV[9]), t.id)
    publish_snapshot(task_key, ARGV[10] .. id_rest(t.id))
    claimed[#claimed + 1] = t.id
    claimed[#claimed + 1] = cjson.encode(fields_table(fields))
    return
  end
  claims = 0 -- a queued task: the next ones queue behind it
  redis.call("HSET", task_key, unpack(fields))
  if due then return end
  if t.concurrency_key then
    group_push(groups, task_key, t.id, t.concurrency_key, t.priority, nil)
  else
    redis.call("RPUSH", queue_for(queues, t.priority), t.id)
    pushed = true
  end
  length = length + 1
end

for i = 11, #ARGV do
  local t = cjson.decode(ARGV[i])
  local task_key = prefix .. id_rest(t.id)
  local id, code = replay(t)
  if not id then
    local live = twin(t)
    if live then
      id, code = live, CODE.UNIQUE_HIT
    elseif max_queued > 0 and length >= max_queued then
      id, code = t.id, CODE.QUEUE_FULL
    elseif redis.call("EXISTS", task_key) == 1 then
      id, code = t.id, CODE.ID_TAKEN
    else
      store(t, task_key)
      id, code = t.id, CODE.NEW
    end
    if t.record and (code == CODE.NEW or code == CODE.UNIQUE_HIT) then
      redis.call("SET", t.record, id .. " " .. t.digest .. " " .. code, "EX", record_ttl)
    end
  end
  out[#out + 1] = id
  out[#out + 1] = code
end

if was_empty and (pushed or group_woke(groups)) then
  redis.call("SPUBLISH", wake_channel, "1")
end
if earliest then
  redis.call("SPUBLISH", wake_channel, "due-in:" .. string.format("%d", earliest - now_ms))
end
publish_snapshots()
return {out, claimed}
