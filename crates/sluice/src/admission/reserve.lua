-- GCRA reservation over several budgets of one scope (KEYS[1], a hash of `tat`s), on the
-- server's clock. ARGV: epoch, max wait (s), n, then name, rate, tau, cost per budget.
-- Returns {1, wait} when granted (every tat moved), {0, wait} when the wait is too long.
local t = redis.call('TIME')
local now = (tonumber(t[1]) - tonumber(ARGV[1])) + tonumber(t[2]) / 1e6
local max_wait = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local at = now
local tats = {}
for i = 0, n - 1 do
  local name = ARGV[4 + i * 4]
  local rate = tonumber(ARGV[5 + i * 4])
  local tau = tonumber(ARGV[6 + i * 4])
  local cost = tonumber(ARGV[7 + i * 4])
  local tat = tonumber(redis.call('HGET', KEYS[1], name) or '0')
  tats[i] = tat
  local w = cost / rate
  local e
  if w > tau then e = math.max(tat, now) else e = math.max(tat + w - tau, now) end
  if e > at then at = e end
end
if at - now > max_wait then
  return {0, tostring(at - now)}
end
local ttl = 1
for i = 0, n - 1 do
  local name = ARGV[4 + i * 4]
  local rate = tonumber(ARGV[5 + i * 4])
  local cost = tonumber(ARGV[7 + i * 4])
  local tat = math.max(tats[i], at) + cost / rate
  redis.call('HSET', KEYS[1], name, tostring(tat))
  if tat - now > ttl then ttl = tat - now end
end
redis.call('PEXPIRE', KEYS[1], math.ceil((ttl + 60) * 1000))
return {1, tostring(at - now)}
