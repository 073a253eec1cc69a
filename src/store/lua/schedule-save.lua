#!lua
-- Write a schedule's definition or state: create it, or change it if no other write came between
-- the caller's read and this one (its `gen` is still the one the caller read). Every scheduler
-- hears of the change on the schedule channel and re-reads its next wake-up.
--
-- KEYS[1] schedule hash  mq:schedule:{sched}<id>
-- KEYS[2] ids set        mq:schedules:{sched}
-- KEYS[3] due zset       mq:schedules:{sched}due   (score = next tick, epoch ms)
-- ARGV[1] schedule id
-- ARGV[2] expected gen: "" to create (the id must be free), otherwise the gen the caller read
-- ARGV[3] the schedule channel
-- ARGV[4] fields to write, a JSON object of strings; its `next_run_ms` ("" for none: paused, or
--   no tick left) is also the score in the due set, and its `gen` the new gen
-- Returns a CODE (scripts.ts): SAVED; EXISTS (create: the id is taken); NOT_FOUND (a change of a
-- schedule that is gone); CONFLICT (another write came first: read again and retry).

local key, id, expected = KEYS[1], ARGV[1], ARGV[2]
local current = redis.call("HGET", key, "gen")
if expected == "" then
  if redis.call("EXISTS", key) == 1 then return CODE.EXISTS end
elseif not current then
  return CODE.NOT_FOUND
elseif current ~= expected then
  return CODE.CONFLICT
end
local fields = cjson.decode(ARGV[4])
local pairs_out = {}
for name, value in pairs(fields) do
  pairs_out[#pairs_out + 1] = name
  pairs_out[#pairs_out + 1] = value
end
redis.call("HSET", key, unpack(pairs_out))
redis.call("SADD", KEYS[2], id)
local next_run = fields.next_run_ms
if next_run and next_run ~= "" then
  redis.call("ZADD", KEYS[3], next_run, id)
else
  redis.call("ZREM", KEYS[3], id)
end
redis.call("SPUBLISH", ARGV[3], id)
return CODE.SAVED
