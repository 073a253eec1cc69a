-- Delete one task in any state, from every key that names it. A running handler is told to stop
-- (`cancel:<id>` on the wake channel; its late end finds no task and writes nothing), and watchers
-- get a last message with status `deleted`.
--
-- KEYS[1] task hash       mq:msg:{TAG}<id minus TAG>
-- KEYS[2] queue list      mq:queue:{TAG}<handler>
-- KEYS[3] running zset    mq:wip:{TAG}<handler>
-- KEYS[4] scheduled zset  mq:scheduled:{TAG}<handler>
-- KEYS[5] expiry zset     mq:expiry:{TAG}<handler>
-- ARGV[1] task id
-- ARGV[2] task channel
-- ARGV[3] wake channel of the handler's queue
-- Returns 1 deleted, 0 no such task.

local task_key, id = KEYS[1], ARGV[1]
local f = redis.call("HMGET", task_key, "status", "unique", "ver", "priority")
if not f[1] then return 0 end
if f[1] == "queued" then redis.call("LREM", queue_for(KEYS[2], f[4]), 1, id) end
redis.call("ZREM", KEYS[3], id)
redis.call("ZREM", KEYS[4], id)
redis.call("ZREM", KEYS[5], id)
release_unique(f[2], id)
redis.call("DEL", task_key)
if f[1] == "started" then redis.call("SPUBLISH", ARGV[3], "cancel:" .. id) end
if redis.call("PUBSUB", "SHARDNUMSUB", ARGV[2])[2] > 0 then
  redis.call("SPUBLISH", ARGV[2], cjson.encode({"status", "deleted", "ver", tostring((tonumber(f[3]) or 0) + 1)}))
end
return 1
