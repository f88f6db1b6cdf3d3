-- complete: ARGV[1 + i] the token of claim i.
-- Reply per item: 0, superseded (0 or 1), 0 | 1, 0, 0 (lease lost) | 2, state, 0.
local err = prepare()
if err then
  return err
end
local now = now_ms()
local X = int(now)
for i = 1, #KEYS - FIXED do
  local k = KEYS[FIXED + i]
  local r = CACHE[k]
  if not held(r, ARGV[1 + i]) then
    push(1, 0, 0)
  elseif r.s ~= 'r' then
    push(2, CODE[r.s], 0)
  else
    -- A newer version seen in flight leaves the key processable again at once.
    local n = r.n
    if n ~= nil and n ~= r.v then
      call('HSET', k, 's', 'c', 'x', X, 'p', '1')
      r.p = '1'
      clear(k, r, 'n')
      push(0, 1, 0)
    else
      call('HSET', k, 's', 'c', 'x', X)
      clear(k, r, 'n', 'p')
      push(0, 0, 0)
    end
    r.s, r.x = 'c', now
    index(member(k), 'r', 'c', now)
  end
end
finish()
return OUT
