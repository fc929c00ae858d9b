-- Reserve `amount` against every budget in KEYS, or refuse at the first that would be crossed.
-- ARGV: amount, reservation id, hold ms, then one limit per key, then one TTL (ms) per key.
-- Expired holds (a crashed process's) are released first.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local amount = tonumber(ARGV[1])
local rid = ARGV[2]
local hold_ms = tonumber(ARGV[3])
local n = #KEYS
for i = 1, n do
  local h = KEYS[i]
  local z = h .. ':res'
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, m in ipairs(expired) do
    local amt = tonumber(string.match(m, ':(%d+)$') or '0')
    redis.call('HINCRBY', h, 'reserved', -amt)
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
end
for i = 1, n do
  local h = KEYS[i]
  local limit = tonumber(ARGV[3 + i])
  local spent = tonumber(redis.call('HGET', h, 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', h, 'reserved') or '0')
  if spent + reserved + amount > limit then
    return {i, spent, reserved}
  end
end
for i = 1, n do
  local h = KEYS[i]
  redis.call('HINCRBY', h, 'reserved', amount)
  redis.call('ZADD', h .. ':res', now + hold_ms, rid .. ':' .. amount)
  local ttl = tonumber(ARGV[3 + n + i])
  redis.call('PEXPIRE', h, ttl)
  redis.call('PEXPIRE', h .. ':res', ttl)
end
return {0, 0, 0}
