-- remove: ARGV[2] '1' to force (remove leased keys too, fencing their holders out).
-- Reply per key: 0, 0 (removed) | 1, 0 (not found) | 2, state (leased, not forced).
local err = prepare()
if err then
  return err
end
local force = ARGV[2] == '1'
for i = 1, #KEYS - FIXED do
  local k = KEYS[FIXED + i]
  local r = CACHE[k]
  if not r then
    push(1, 0)
  elseif LEASED[r.s] and not force then
    push(2, CODE[r.s])
  else
    drop(k)
    index(member(k), r.s, nil)
    push(0, 0)
  end
end
finish()
return OUT
