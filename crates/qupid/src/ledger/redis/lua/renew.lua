-- renew: ARGV[3] lease ms, ARGV[3 + i] the token of claim i.
-- Reply per item: 0, expires_at, 0 (renewed) | 1, 0, 0 (lease lost) | 2, state, 0 |
-- found, 0, 0 (unreadable).
local err = prepare()
if err then
  return err
end
local lease_until = now_ms() + tonumber(ARGV[3])
local X = int(lease_until)
for i = 1, #KEYS - FIXED do
  local k, s, p, t, x, a, b, v, n, e = item(i)
  if s == BAD then
    push(p, 0, 0)
  elseif not s or t ~= ARGV[3 + i] then
    push(1, 0, 0)
  elseif not LEASED[s] then
    push(2, CODE[s], 0)
  else
    if x ~= X then
      put(i, k, encode(s, p, t, X, a, b, v, n, e))
    end
    push(0, lease_until, 0)
  end
end
finish()
return OUT
