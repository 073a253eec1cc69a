-- @include minutes
-- Runs ended, by outcome (finished, failed, retried, canceled), to add to the handler's counters
-- (`mq:stats:{TAG}<handler>`) when the script ends: one HINCRBY per outcome, not per task; and
-- finished and failed ends, with the run times the worker measured, to the minute's series
-- (minutes.lua): one HINCRBY per field touched.
local counts = {}
local timed = {} -- histogram bucket -> runs

-- Count one end. `run_time` (seconds): the run's time as its worker measured it, for a run that
-- ended finished or failed (nil when no run ended: expired in its queue, worker lost, canceled).
local function count(outcome, run_time)
  counts[outcome] = (counts[outcome] or 0) + 1
  if run_time then
    local bucket = run_time_bucket(run_time)
    timed[bucket] = (timed[bucket] or 0) + 1
  end
end

-- Add the counted outcomes to the handler's counters and to the series of the minute of `now_ms`
-- (epoch ms, Redis's clock: the script's `ended_at` time; clock() when not given). Every script
-- that ends runs calls it last.
local function add_counts(stats_key, now_ms)
  for outcome, n in pairs(counts) do
    redis.call("HINCRBY", stats_key, outcome, n)
  end
  if counts.finished or counts.failed or next(timed) then
    add_series(stats_key, now_ms or clock(), counts, timed)
  end
  counts = {}
  timed = {}
end
