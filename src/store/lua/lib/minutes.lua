-- @include time
-- The per-minute series of a handler's ended runs (store/run-times.ts has the layout): a hash per
-- minute, the handler's counters key + ":<epoch minute>" (keys.ts statsMinuteKey), holding
-- `finished`, `failed` and `t<k>`, runs whose run time fell in bucket k of a fixed log-scale
-- histogram. So a handler has at most SERIES_MINUTES + 1 minute keys of at most RUN_TIME_BUCKETS + 2
-- fields each, whatever the traffic: each expires once its minute leaves the kept window.
-- RUN_TIME_BUCKETS, RUN_TIME_BUCKETS_PER_OCTAVE and SERIES_MINUTES come from TypeScript (scripts.ts).

-- The histogram bucket of a run time in seconds: 0 under 1 ms, k for [2^((k-1)/4), 2^(k/4)) ms.
local function run_time_bucket(seconds)
  local ms = (tonumber(seconds) or 0) * 1000
  if not (ms >= 1) then return 0 end
  return math.min(RUN_TIME_BUCKETS - 1, math.floor(math.log(ms) / math.log(2) * RUN_TIME_BUCKETS_PER_OCTAVE) + 1)
end

-- Add a batch's ends to the minute of `now_ms` (epoch ms, Redis's clock): one HINCRBY per field
-- touched and one EXPIREAT. `ended` maps "finished"/"failed" to tasks, `timed` buckets to runs.
local function add_series(stats_key, now_ms, ended, timed)
  local minute = math.floor(now_ms / 60000)
  local key = stats_key .. ":" .. minute
  local touched = false
  for _, outcome in ipairs({"finished", "failed"}) do
    if ended[outcome] then
      redis.call("HINCRBY", key, outcome, ended[outcome])
      touched = true
    end
  end
  for bucket, n in pairs(timed) do
    redis.call("HINCRBY", key, "t" .. bucket, n)
    touched = true
  end
  if touched then
    -- Gone when the minute is no longer among the last SERIES_MINUTES (one minute of slack).
    redis.call("EXPIREAT", key, (minute + SERIES_MINUTES + 1) * 60)
  end
end
