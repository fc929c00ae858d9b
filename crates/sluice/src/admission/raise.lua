-- Make sure one budget's tat is at least now + value (server corrections and pauses).
-- ARGV: epoch, name, value (s).
local t = redis.call('TIME')
local now = (tonumber(t[1]) - tonumber(ARGV[1])) + tonumber(t[2]) / 1e6
local tat = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
local target = now + tonumber(ARGV[3])
if target > tat then
  redis.call('HSET', KEYS[1], ARGV[2], tostring(target))
  redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[3]) + 120) * 1000))
end
return 1
