-- A handler's flow limits (`mq:limits:{TAG}<handler>`, a hash; a field absent or "0" is no limit):
-- `rate` (task starts per second, a decimal), `burst` (the token bucket's size; 0: rate, at least
-- 1), `max_running` (tasks running at once), `max_running_per_key` (tasks of one concurrency key
-- running at once), `paused` ("1": no task starts). Starts under a rate are paid from a token
-- bucket (`mq:bucket:{TAG}<handler>`, a hash: `tokens`, a decimal, and `at`, epoch ms by Redis's
-- clock), refilled at `rate` tokens a second up to `burst`; an absent bucket is full, and the
-- bucket expires once it would be full again. HOLD (scripts.ts) names why a fetch started fewer
-- tasks than it asked for while tasks stay queued.

-- Longest wait a fetch answers (the longest a Node timer takes): a slower rate is asked again then.
local MAX_WAIT_MS = 2147483647

-- The limits, as numbers (0: none), read with one HMGET.
local function read_limits(limits_key)
  local v = redis.call("HMGET", limits_key, "rate", "burst", "max_running", "max_running_per_key", "paused")
  return {rate = tonumber(v[1]) or 0, burst = tonumber(v[2]) or 0, max_running = tonumber(v[3]) or 0,
    max_running_per_key = tonumber(v[4]) or 0, paused = v[5] == "1"}
end

-- The bucket's size: `burst`, or the rate (at least 1) when unset.
local function bucket_size(limits)
  if limits.burst > 0 then return limits.burst end
  return math.max(1, limits.rate)
end

-- Tokens in the bucket at `now_ms`: what it held at its last change plus the refill since, at most
-- its size; full when it has no state.
local function bucket_tokens(bucket_key, limits, now_ms)
  local size = bucket_size(limits)
  local v = redis.call("HMGET", bucket_key, "tokens", "at")
  local tokens, at = tonumber(v[1]), tonumber(v[2])
  if not tokens or not at then return size end
  return math.min(size, tokens + math.max(0, now_ms - at) * limits.rate / 1000)
end

-- How many tasks may start now, at most `want`; the HOLD that binds when fewer than `want` may;
-- and, for RATE, the ms until the bucket holds a whole token (-1 otherwise: wait for a wake-up).
local function allowance(limits, bucket_key, wip_key, now_ms, want)
  if limits.paused then return 0, HOLD.PAUSED, -1 end
  local allowed, hold, wait_ms = want, HOLD.NONE, -1
  if limits.max_running > 0 then
    local free = math.max(0, limits.max_running - redis.call("ZCARD", wip_key))
    if free < allowed then allowed, hold = free, HOLD.MAX_RUNNING end
  end
  if limits.rate > 0 and allowed > 0 then
    local tokens = bucket_tokens(bucket_key, limits, now_ms)
    local whole = math.floor(tokens)
    if whole < allowed then
      allowed, hold = whole, HOLD.RATE
      wait_ms = math.min(MAX_WAIT_MS, math.ceil((whole + 1 - tokens) * 1000 / limits.rate))
    end
  end
  return allowed, hold, wait_ms
end

-- Pay for `started` starts from the bucket (a no-op without a rate or without starts).
local function take_tokens(limits, bucket_key, now_ms, started)
  if limits.rate <= 0 or started <= 0 then return end
  local tokens = bucket_tokens(bucket_key, limits, now_ms) - started
  redis.call("HSET", bucket_key, "tokens", string.format("%.6f", tokens), "at", now_ms)
  -- Absent is full: the state is dropped once refilling would have filled it.
  redis.call("PEXPIRE", bucket_key, math.ceil((bucket_size(limits) - tokens) * 1000 / limits.rate) + 1000)
end

-- Tell the handler's workers that running tasks ended (`go` on its wake channel), so a queue held
-- by max_running starts its next tasks: only when there is such a limit (one HGET otherwise). A
-- key's cap (max_running_per_key) never holds a lane: lib/groups.lua wakes the workers (`1`) when
-- a key at its cap gets a turn again.
local function wake_if_running_limited(limits_key, wake_channel, ended)
  if ended <= 0 then return end
  if (tonumber(redis.call("HGET", limits_key, "max_running")) or 0) > 0 then
    redis.call("SPUBLISH", wake_channel, "go")
  end
end
