-- Task ids and the names built from them. A task id starts with its handler's TAG (TAG_LENGTH
-- characters, set by scripts.ts from keys.ts), so a task's key and channel are a prefix the
-- caller passes (`mq:msg:{TAG}`, `mq:events:{TAG}`) followed by the rest of the id.
local function id_rest(id)
  return string.sub(id, TAG_LENGTH + 1)
end

-- Most arguments passed to one command built from a batch (Lua's unpack has a stack limit).
local CHUNK = 1000

-- Run `command key args...` over a list of arguments, in chunks of at most CHUNK.
local function call_chunked(command, key, args)
  for i = 1, #args, CHUNK do
    redis.call(command, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
end

-- A table {field = value} from a list {field, value, field, value, ...} (an HGETALL reply, HSET's
-- arguments).
local function fields_table(list)
  local t = {}
  for k = 1, #list, 2 do t[list[k]] = list[k + 1] end
  return t
end

-- A task hash's fields as one JSON object {"field": "value", ...}: a reply the client parses in
-- one step (JSON.parse), cheaper than a RESP array of two strings per field.
local function fields_json(task_key)
  return cjson.encode(fields_table(redis.call("HGETALL", task_key)))
end
