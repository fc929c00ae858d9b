-- Settle a reservation: release its hold on every budget in KEYS and add the real cost.
-- ARGV: reservation id, reserved amount, cost. Returns each budget's spend after.
local out = {}
local member = ARGV[1] .. ':' .. ARGV[2]
for i = 1, #KEYS do
  local h = KEYS[i]
  if redis.call('ZREM', h .. ':res', member) == 1 then
    redis.call('HINCRBY', h, 'reserved', -tonumber(ARGV[2]))
  end
  out[i] = redis.call('HINCRBY', h, 'spent', tonumber(ARGV[3]))
end
return out
