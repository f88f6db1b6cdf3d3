-- release: ARGV[2 + i] the token of claim i.
-- Reply per item: 0, 0 (released) | 1, 0 (lease lost) | 2, state | found, 0 (unreadable).
local err = prepare()
if err then
  return err
end
for i = 1, #KEYS - FIXED do
  local k, s, p, t = item(i)
  if s == BAD then
    push(p, 0)
  elseif not s or t ~= ARGV[2 + i] then
    push(1, 0)
  elseif not LEASED[s] then
    push(2, CODE[s])
  else
    put(i, k, false)
    index(member(k), s, nil)
    push(0, 0)
  end
end
finish()
return OUT
