-- Concurrency keys ("fair groups"). A task created with a concurrency key (field
-- `concurrency_key`) does not wait in the handler's priority lists but in its key's own sorted set,
-- `mq:group:{TAG}<handler>:<key>`, high priority first, first in first out within a priority. The
-- keys take turns: the ring (a sorted set scored by turn number) holds the keys that have queued
-- tasks and may run one more now; a fetch pops the key with the lowest turn, takes its next task and
-- puts it back behind every other key. A key that reaches the handler's `max_running_per_key` (its
-- limits hash; absent or 0: no cap, keys still take turns) leaves the ring until one of its running
-- tasks stops (group_release), which brings it back. Running tasks per key are counted in a hash,
-- every queued grouped task is also in one sorted set by place in line (listings, counts). Every
-- path that queues, takes, removes or stops a grouped task goes through these functions; the keys
-- come from keys.ts groupKeys / groupQueuePrefix, all in the handler's slot.
--
-- Invariant: a key with queued tasks is in the ring, or has running tasks (whose end brings it back).

-- A key's set is scored by priority band (high 0, normal 1, low 2) times BAND plus the task's place
-- in line (`group_seq`, from the info hash's `seq`): below 2^53, so exact in a double.
local BAND = 1125899906842624 -- 2^50

-- The band of a priority as stored on a task (field `priority`: "1", "-1", or absent for 0).
local function group_score_band(priority)
  if priority == "1" then return 0 end
  if priority == "-1" then return 2 end
  return 1
end

-- A handler's groups: its limits hash (`max_running_per_key`), ring, running counts, grouped set,
-- info hash (`seq`: the last place in line handed out; `turn`: see group_first_turn), and the
-- prefix of its keys' sets. `checked` notes keys already put in turn by group_push in this script.
local function groups_of(limits, ring, running, grouped, info, prefix)
  return {ring = ring, running = running, grouped = grouped, info = info, limits = limits, prefix = prefix,
    checked = {}, woke = false}
end

-- The handler's max_running_per_key (0: no cap), read once per script.
local function group_cap(g)
  if not g.cap then g.cap = tonumber(redis.call("HGET", g.limits, "max_running_per_key")) or 0 end
  return g.cap
end

-- True when a key running `running` tasks may start one more.
local function group_under_cap(g, running)
  local cap = group_cap(g)
  return cap <= 0 or running < cap
end

-- Tasks of `key` running now.
local function group_running(g, key)
  return tonumber(redis.call("HGET", g.running, key)) or 0
end

-- Give a key a turn behind every key in the ring (NX: a key already there keeps its turn). A key
-- that joins an empty ring is noted (group_woke): workers whose last fetch came back short wait for
-- a wake-up, and an empty ring is the only state in which they may be waiting for this key.
local function group_join(g, key)
  local last = redis.call("ZRANGE", g.ring, -1, -1, "WITHSCORES")
  local added = redis.call("ZADD", g.ring, "NX", string.format("%.0f", (tonumber(last[2]) or 0) + 1), key)
  if added == 1 and not last[1] then g.woke = true end
end

-- A key gets (or keeps) a turn if it has queued tasks and may run one more.
local function group_recheck(g, key, running)
  if group_under_cap(g, running) and redis.call("ZCARD", g.prefix .. key) > 0 then group_join(g, key) end
end

-- Queue task `id` (hash `task_key`) in its key's set and give the key a turn if it may run one more.
-- `seq`: the task's place in line (field `group_seq`) when it goes back where it was (recovered,
-- requeued, taken back); nil for the end of the line (a new task, a retry, a delayed task now due).
local function group_push(g, task_key, id, key, priority, seq)
  seq = tonumber(seq)
  if not seq then
    seq = redis.call("HINCRBY", g.info, "seq", 1)
    redis.call("HSET", task_key, "group_seq", seq)
  end
  redis.call("ZADD", g.prefix .. key, string.format("%.0f", group_score_band(priority) * BAND + seq), id)
  redis.call("ZADD", g.grouped, seq, id)
  if not g.checked[key] then
    g.checked[key] = true -- nothing else in this script takes from the ring or frees a slot of it unnoticed
    if group_under_cap(g, group_running(g, key)) then group_join(g, key) end
  end
end

-- Take the next task of the key whose turn it is. Keys at their cap leave the ring (the end of one
-- of their running tasks brings them back). Returns the task id, its key and the key's running
-- count, or nil when no key may start a task now. The caller starts the task (or finds it expired
-- or gone) and then calls group_taken.
local function group_take(g)
  while true do
    local turn = redis.call("ZPOPMIN", g.ring)
    local key = turn[1]
    if not key then return nil end
    g.checked[key] = nil
    local running = group_running(g, key)
    if group_under_cap(g, running) then
      local head = redis.call("ZPOPMIN", g.prefix .. key)
      if head[1] then
        redis.call("ZREM", g.grouped, head[1])
        return head[1], key, running
      end
    end
  end
end

-- After group_take: count the task as running if it started, and give its key another turn (behind
-- the others) if it has more tasks and may run one more.
local function group_taken(g, key, running, started)
  if started then
    running = running + 1
    redis.call("HINCRBY", g.running, key, 1)
  end
  group_recheck(g, key, running)
end

-- A task of `key` stopped running (ended, failed, retried, canceled, requeued, recovered, taken
-- back, deleted): its slot frees, and the key takes turns again if it has queued tasks. A count
-- never goes below 0; a field at 0 is removed.
local function group_release(g, key)
  local running = redis.call("HINCRBY", g.running, key, -1)
  if running <= 0 then
    redis.call("HDEL", g.running, key)
    running = 0
  end
  group_recheck(g, key, running)
end

-- Take a queued (or scheduled) task out of its key's set: canceled, deleted, expired in its queue.
-- A key left without queued tasks leaves the ring.
local function group_remove(g, key, id)
  redis.call("ZREM", g.grouped, id)
  if redis.call("ZREM", g.prefix .. key, id) == 1 and redis.call("EXISTS", g.prefix .. key) == 0 then
    redis.call("ZREM", g.ring, key)
  end
  g.checked[key] = nil
end

-- For a fetch: whether a key may have a turn (the ring is not empty), and whether the first turn is
-- the ring's rather than the priority lists' (the last fetch that took from both ended on a list).
-- Without concurrency keys: one EXISTS.
local function group_first_turn(g)
  if redis.call("EXISTS", g.ring) == 0 then return false, false end
  g.turn = redis.call("HGET", g.info, "turn") == "1"
  return true, g.turn
end

-- After a fetch: remember whose turn is next (only when group_first_turn found keys in the ring).
local function group_next_turn(g, ring_turn)
  if g.turn ~= nil and g.turn ~= ring_turn then redis.call("HSET", g.info, "turn", ring_turn and "1" or "0") end
end

-- Grouped tasks queued now, every key.
local function group_queued(g)
  return redis.call("ZCARD", g.grouped)
end

-- True when a key joined an empty ring in this script (see group_join): the script publishes a
-- wake-up. Without concurrency keys, never.
local function group_woke(g)
  return g.woke
end
