#!lua flags=allow-oom
-- Renew the leases of running tasks of one handler (the lease keeper thread, every quarter lease):
-- each deadline becomes now + lease by Redis's clock. ZADD XX: a task no longer in the running
-- set (its end was recorded, or the sweep took it back) stays out.
-- @include time, task
--
-- KEYS[1] running zset  mq:wip:{TAG}<handler>  (score = lease deadline, epoch ms)
-- ARGV[1] lease, ms
-- ARGV[2...] ids of the tasks to renew
-- Returns the number of leases renewed.

local deadline = clock() + tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV, CHUNK do
  local args = {}
  for k = i, math.min(i + CHUNK - 1, #ARGV) do
    args[#args + 1] = deadline
    args[#args + 1] = ARGV[k]
  end
  renewed = renewed + redis.call("ZADD", KEYS[1], "XX", "CH", unpack(args))
end
return renewed
