-- retry: removes Dead records.
-- Reply per key: 0, 0 (retried) | 1, 0 (not found) | 2, state (not dead).
local err = prepare()
if err then
  return err
end
for i = 1, #KEYS - FIXED do
  local k = KEYS[FIXED + i]
  local r = CACHE[k]
  if not r then
    push(1, 0)
  elseif r.s ~= 'd' then
    push(2, CODE[r.s])
  else
    drop(k)
    index(member(k), 'd', nil)
    push(0, 0)
  end
end
finish()
return OUT
