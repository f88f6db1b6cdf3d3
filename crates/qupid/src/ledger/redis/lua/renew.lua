-- renew: ARGV[2] lease ms, ARGV[2 + i] the token of claim i.
-- Reply per item: 0, expires_at, 0 (renewed) | 1, 0, 0 (lease lost) | 2, state, 0.
local err = prepare()
if err then
  return err
end
local lease_until = now_ms() + tonumber(ARGV[2])
local X = int(lease_until)
for i = 1, #KEYS - FIXED do
  local k = KEYS[FIXED + i]
  local r = CACHE[k]
  if not held(r, ARGV[2 + i]) then
    push(1, 0, 0)
  elseif not LEASED[r.s] then
    push(2, CODE[r.s], 0)
  else
    if r.x ~= lease_until then
      call('HSET', k, 'x', X)
      r.x = lease_until
    end
    push(0, lease_until, 0)
  end
end
finish()
return OUT
