-- Runs ended, by outcome (finished, failed, retried, canceled), to add to the handler's counters
-- (`mq:stats:{TAG}<handler>`) when the script ends: one HINCRBY per outcome, not per task.
local counts = {}

local function count(outcome)
  counts[outcome] = (counts[outcome] or 0) + 1
end

-- Add the counted outcomes to the handler's counters. Every script that ends runs calls it last.
local function add_counts(stats_key)
  for outcome, n in pairs(counts) do
    redis.call("HINCRBY", stats_key, outcome, n)
  end
  counts = {}
end
