#!lua flags=allow-oom
-- Write a worker's hash: its fields, `last_heartbeat` by Redis's clock, and its expiry (a worker
-- that stops beating disappears). The worker's entries in `mq:workers` and `mq:queues` are added
-- by separate commands: on a Redis Cluster those keys live in other slots.
-- @include time
--
-- KEYS[1] worker hash  mq:worker:<host:port:pid>
-- ARGV[1] seconds the hash lives without another heartbeat
-- ARGV[2...] field, value, field, value, ... (birth, queues, pid, hostname, counters, state)
-- Returns 1.

local _, now = clock()
redis.call("HSET", KEYS[1], "last_heartbeat", now, unpack(ARGV, 2))
redis.call("EXPIRE", KEYS[1], ARGV[1])
return 1
