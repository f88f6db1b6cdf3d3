-- complete: ARGV[1 + i] the token of claim i.
-- Reply per item: 0, superseded (0 or 1), 0 | 1, 0, 0 (lease lost) | 2, state, 0.
local err = prepare()
if err then
  return err
end
local now = now_ms()
for i = 1, #KEYS - FIXED do
  local k = KEYS[FIXED + i]
  local r = CACHE[k]
  if not held(r, ARGV[1 + i]) then
    push(1, 0, 0)
  elseif r.s ~= 'r' then
    push(2, CODE[r.s], 0)
  else
    -- A newer version seen in flight leaves the key processable again at once.
    local superseded = r.n ~= nil and r.n ~= r.v
    r.n, r.p, r.x, r.s = nil, superseded, now, 'c'
    store(k, r)
    index(member(k), 'r', 'c', now)
    push(0, superseded and 1 or 0, 0)
  end
end
finish()
return OUT
