-- Settle a token reservation: move one budget's tat by delta / rate (a refund never moves it
-- before now). ARGV: epoch, name, rate, delta tokens.
local t = redis.call('TIME')
local now = (tonumber(t[1]) - tonumber(ARGV[1])) + tonumber(t[2]) / 1e6
local tat = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
local delta = tonumber(ARGV[4]) / tonumber(ARGV[3])
local moved = tat + delta
if delta < 0 then moved = math.max(moved, math.min(tat, now)) end
redis.call('HSET', KEYS[1], ARGV[2], tostring(moved))
return 1
