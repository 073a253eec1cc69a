-- A handler's queues: three lists, by priority, whose keys the caller passes (keys.ts builds them):
-- `queues.high` (priority 1), `queues.normal` (0, the original's list), `queues.low` (-1). Workers
-- take from high, then normal, then low; first in, first out within each.

-- The list of a priority as stored on a task (field `priority`: "1", "-1", or absent for 0).
local function queue_for(queues, priority)
  if priority == "1" then return queues.high end
  if priority == "-1" then return queues.low end
  return queues.normal
end

-- Tasks waiting in a handler's queues, all priorities.
local function queued_count(queues)
  return redis.call("LLEN", queues.high) + redis.call("LLEN", queues.normal) + redis.call("LLEN", queues.low)
end
