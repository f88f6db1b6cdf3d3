-- start: ARGV[2] lease ms, ARGV[2 + i] the token of claim i.
-- Reply per item: 0, attempt, expires_at (started) | 1, 0, 0 (lease lost) | 2, state, 0.
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
  elseif r.s ~= 'q' then
    push(2, CODE[r.s], 0)
  else
    local a = min(tonumber(r.a) + 1, MAXU16)
    call('HSET', k, 's', 'r', 'x', X, 'a', int(a))
    r.s, r.x, r.a = 'r', lease_until, a
    index(member(k), 'q', 'r')
    push(0, a, lease_until)
  end
end
finish()
return OUT
