-- remove: ARGV[3] '1' to force (remove leased keys too, fencing their holders out).
-- Reply per key: 0, 0 (removed) | 1, 0 (not found) | 2, state (leased, not forced).
local err = prepare()
if err then
  return err
end
local force = ARGV[3] == '1'
for i = 1, #KEYS - FIXED do
  local k, s = item(i)
  if not k then
    return s
  end
  if not s then
    push(1, 0)
  elseif LEASED[s] and not force then
    push(2, CODE[s])
  else
    put(i, k, false)
    index(member(k), s, nil)
    push(0, 0)
  end
end
finish()
return OUT
