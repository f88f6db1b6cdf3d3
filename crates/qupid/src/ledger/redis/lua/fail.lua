-- fail: ARGV[3] lease ms, ARGV[4] max attempts, then per claim i: ARGV[3 + 2i] its token and
-- ARGV[4 + 2i] its error.
-- Reply per item: 0, dead (0 or 1), attempts | 1, 0, 0 (lease lost) | 2, state, 0 |
-- found, 0, 0 (unreadable).
local err = prepare()
if err then
  return err
end
local now = now_ms()
local lease_until = now + tonumber(ARGV[3])
local max = min(tonumber(ARGV[4]), MAX_COUNT)
for i = 1, #KEYS - FIXED do
  local k, s, p, t, x, a, b, v, n, e = item(i)
  if s == BAD then
    push(p, 0, 0)
  elseif not s or t ~= ARGV[3 + 2 * i] then
    push(1, 0, 0)
  elseif s ~= 'r' then
    push(2, CODE[s], 0)
  else
    local why = ARGV[4 + 2 * i]
    local na = tonumber(a)
    if na >= max then
      put(i, k, encode('d', p, t, int(now), a, b, v, nil, why))
      index(member(k), 'r', 'd', now)
      push(0, 1, na)
    else
      -- Still leased by the caller, to retry after a backoff.
      put(i, k, encode('q', p, t, int(lease_until), a, b, v, n, why))
      index(member(k), 'r', 'q')
      push(0, 0, na)
    end
  end
end
finish()
return OUT
