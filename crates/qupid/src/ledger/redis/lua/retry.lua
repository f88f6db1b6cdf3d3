-- retry: removes Dead records. ARGV[3] '1' to check only: fail as the call would, and write
-- nothing (a sharded namespace checks every shard before retrying in any).
-- Reply per key: 0, 0 (retried) | 1, 0 (not found) | 2, state (not dead).
local err = prepare()
if err then
  return err
end
for i = 1, #KEYS - FIXED do
  local k, s, found = item(i)
  if s == BAD then
    return unreadable(k, found)
  elseif not s then
    push(1, 0)
  elseif s ~= 'd' then
    push(2, CODE[s])
  else
    put(i, k, false)
    index(member(k), 'd', nil)
    push(0, 0)
  end
end
if ARGV[3] == '1' then
  return OUT
end
finish()
return OUT
