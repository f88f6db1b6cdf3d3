-- start: ARGV[3] lease ms, ARGV[3 + i] the token of claim i.
-- Reply per item: 0, attempt, expires_at (started) | 1, 0, 0 (lease lost) | 2, state, 0 |
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
  elseif s ~= 'q' then
    push(2, CODE[s], 0)
  else
    local na = min(tonumber(a) + 1, MAX_COUNT)
    put(i, k, encode('r', p, t, X, int(na), b, v, n, e))
    index(member(k), 'q', 'r')
    push(0, na, lease_until)
  end
end
finish()
return OUT
