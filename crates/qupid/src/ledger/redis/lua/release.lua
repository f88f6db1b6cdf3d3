-- release: ARGV[1 + i] the token of claim i.
-- Reply per item: 0, 0 (released) | 1, 0 (lease lost) | 2, state.
local err = prepare()
if err then
  return err
end
for i = 1, #KEYS - FIXED do
  local k = KEYS[FIXED + i]
  local r = CACHE[k]
  if not held(r, ARGV[1 + i]) then
    push(1, 0)
  elseif not LEASED[r.s] then
    push(2, CODE[r.s])
  else
    drop(k)
    index(member(k), r.s, nil)
    push(0, 0)
  end
end
finish()
return OUT
