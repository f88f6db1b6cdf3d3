-- fail: ARGV[2] lease ms, ARGV[3] max attempts, then per claim i: ARGV[2 + 2i] its token and
-- ARGV[3 + 2i] its error.
-- Reply per item: 0, dead (0 or 1), attempts | 1, 0, 0 (lease lost) | 2, state, 0.
local err = prepare()
if err then
  return err
end
local now = now_ms()
local lease_until = now + tonumber(ARGV[2])
local max = math.min(tonumber(ARGV[3]), MAXU16)
for i = 1, #KEYS - FIXED do
  local k = KEYS[FIXED + i]
  local r = CACHE[k]
  if not held(r, ARGV[2 + 2 * i]) then
    push(1, 0, 0)
  elseif r.s ~= 'r' then
    push(2, CODE[r.s], 0)
  else
    r.e = ARGV[3 + 2 * i]
    if r.a >= max then
      r.x, r.n, r.s = now, nil, 'd'
      store(k, r)
      index(member(k), 'r', 'd', now)
      push(0, 1, r.a)
    else
      -- Still leased by the caller, to retry after a backoff.
      r.x, r.s = lease_until, 'q'
      store(k, r)
      index(member(k), 'r', 'q')
      push(0, 0, r.a)
    end
  end
end
finish()
return OUT
