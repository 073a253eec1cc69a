-- Redis's own clock. Every time a script stores or compares (lease deadlines, due times, queue
-- deadlines, created/started/ended times) comes from here, so the clocks of the processes that
-- call the scripts do not matter.

-- An ISO-8601 UTC time with microseconds (`2025-05-25T05:25:01.375784Z`, the original's form) from
-- epoch seconds and microseconds. Civil date from days since the epoch (H. Hinnant's algorithm).
local function iso_time(seconds, micros)
  local days = math.floor(seconds / 86400)
  local secs = seconds - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format("%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", year, month, day,
    math.floor(secs / 3600), math.floor(secs % 3600 / 60), secs % 60, micros)
end

-- Now: epoch ms, and the same as an ISO time.
local function clock()
  local t = redis.call("TIME")
  local seconds, micros = tonumber(t[1]), tonumber(t[2])
  return seconds * 1000 + math.floor(micros / 1000), iso_time(seconds, micros)
end

-- An epoch ms time as an ISO time (for due times).
local function iso_from_ms(ms)
  local seconds = math.floor(ms / 1000)
  return iso_time(seconds, (ms - seconds * 1000) * 1000)
end
