-- @include task

-- Snapshots to publish when the script ends: task key, channel, task key, channel, ...
local snapshots = {}

-- Publish a task's snapshot when the script ends (see publish_snapshots).
local function publish_snapshot(task_key, channel)
  snapshots[#snapshots + 1] = task_key
  snapshots[#snapshots + 1] = channel
end

-- Publish the snapshots asked for, every field but `data` (params never change), each to its
-- channel as a JSON array [field, value, field, value, ...]; watchers order them by `ver`. One
-- PUBSUB SHARDNUMSUB per chunk tells which channels have listeners; the others are skipped (a
-- watcher subscribes before it reads the task, so it never misses a change). Every script that
-- changes tasks ends with this call.
local function publish_snapshots()
  for i = 1, #snapshots, CHUNK do
    local last = math.min(i + CHUNK - 1, #snapshots)
    local channels = {}
    for k = i + 1, last, 2 do channels[#channels + 1] = snapshots[k] end
    local counts = redis.call("PUBSUB", "SHARDNUMSUB", unpack(channels))
    for k = 2, #counts, 2 do
      if counts[k] > 0 then
        local task_key, channel = snapshots[i + k - 2], counts[k - 1]
        local all = redis.call("HGETALL", task_key)
        local out = {}
        for f = 1, #all, 2 do
          if all[f] ~= "data" then
            out[#out + 1] = all[f]
            out[#out + 1] = all[f + 1]
          end
        end
        redis.call("SPUBLISH", channel, cjson.encode(out))
      end
    end
  end
  snapshots = {}
end
