#!lua flags=allow-oom
-- Delete one task in any state, from every key that names it. A running handler is told to stop
-- (`cancel:<id>` on the wake channel; its late end finds no task and writes nothing), and watchers
-- get a last message with status `deleted`.
-- @include queues, ending, limits, groups
--
-- KEYS[1] task hash       mq:msg:{TAG}<id minus TAG>
-- KEYS[2..4] the handler's queues: high, normal, low    mq:queue:{TAG}<handler>[:high|:low]
-- KEYS[5] running zset    mq:wip:{TAG}<handler>
-- KEYS[6] scheduled zset  mq:scheduled:{TAG}<handler>
-- KEYS[7] expiry zset     mq:expiry:{TAG}<handler>
-- KEYS[8] limits hash     mq:limits:{TAG}<handler>  (a running limit: `go` is published when a running task goes)
-- KEYS[9..12] the handler's concurrency keys: ring, running, grouped, info (lib/groups.lua)
-- ARGV[1] task id
-- ARGV[2] task channel
-- ARGV[3] wake channel of the handler's queue
-- ARGV[4] prefix of the concurrency keys' sets `mq:group:{TAG}<handler>:`
-- Returns a CODE (scripts.ts): DELETED or NOT_FOUND.

local task_key, id = KEYS[1], ARGV[1]
local queues = {high = KEYS[2], normal = KEYS[3], low = KEYS[4]}
local f = redis.call("HMGET", task_key, "status", "unique", "ver", "priority", "concurrency_key")
if not f[1] then return CODE.NOT_FOUND end
local groups = groups_of(KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], ARGV[4])
if f[5] then
  -- A queued (or scheduled) task leaves its key's set; a running one frees its key's slot.
  if f[1] == "queued" or f[1] == "scheduled" then group_remove(groups, f[5], id) end
  if f[1] == "started" then group_release(groups, f[5]) end
elseif f[1] == "queued" then
  redis.call("LREM", queue_for(queues, f[4]), 1, id)
end
redis.call("ZREM", KEYS[5], id)
redis.call("ZREM", KEYS[6], id)
redis.call("ZREM", KEYS[7], id)
release_unique(f[2], id)
redis.call("DEL", task_key)
if f[1] == "started" then
  redis.call("SPUBLISH", ARGV[3], "cancel:" .. id)
  wake_if_running_limited(KEYS[8], ARGV[3], 1)
end
if group_woke(groups) then redis.call("SPUBLISH", ARGV[3], "1") end
if redis.call("PUBSUB", "SHARDNUMSUB", ARGV[2])[2] > 0 then
  redis.call("SPUBLISH", ARGV[2], cjson.encode({"status", "deleted", "ver", tostring((tonumber(f[3]) or 0) + 1)}))
end
return CODE.DELETED
