-- fail: ARGV[2] lease ms, ARGV[3] max attempts, then per claim i: ARGV[2 + 2i] its token and
-- ARGV[3 + 2i] its error.
-- Reply per item: 0, dead (0 or 1), attempts | 1, 0, 0 (lease lost) | 2, state, 0.
local err = prepare()
if err then
  return err
end
local now = now_ms()
local lease_until = now + tonumber(ARGV[2])
local max = min(tonumber(ARGV[3]), MAXU16)
for i = 1, #KEYS - FIXED do
  local k = KEYS[FIXED + i]
  local r = CACHE[k]
  if not held(r, ARGV[2 + 2 * i]) then
    push(1, 0, 0)
  elseif r.s ~= 'r' then
    push(2, CODE[r.s], 0)
  else
    local e = ARGV[3 + 2 * i]
    local a = tonumber(r.a)
    if a >= max then
      call('HSET', k, 's', 'd', 'x', int(now), 'e', e)
      r.s, r.x, r.e = 'd', now, e
      clear(k, r, 'n')
      index(member(k), 'r', 'd', now)
      push(0, 1, a)
    else
      -- Still leased by the caller, to retry after a backoff.
      call('HSET', k, 's', 'q', 'x', int(lease_until), 'e', e)
      r.s, r.x, r.e = 'q', lease_until, e
      index(member(k), 'r', 'q')
      push(0, 0, a)
    end
  end
end
finish()
return OUT
