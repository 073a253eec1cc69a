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
