-- remove: ARGV[3] '1' to force (remove leased keys too, fencing their holders out, and
-- whatever a record key holds that is not a record: its state unknown, its member leaves
-- every index). Without force, such a key fails the call, naming it, before anything is
-- written.
-- ARGV[4] '1' to check only: fail as the call would, and write nothing (a sharded namespace
-- checks every shard before removing from any).
-- Reply per key: 0, 0 (removed) | 1, 0 (not found) | 2, state (leased, not forced).
local err = prepare()
if err then
  return err
end
local force = ARGV[3] == '1'
for i = 1, #KEYS - FIXED do
  local k, s, found = item(i)
  if s == BAD then
    if not force then
      return unreadable(k, found)
    end
    put(i, k, false)
    -- Gone now: a later copy of the key in the batch finds no record.
    FOREIGN[k] = nil
    SCRUB[#SCRUB + 1] = member(k)
    push(0, 0)
  elseif not s then
    push(1, 0)
  elseif LEASED[s] and not force then
    push(2, CODE[s])
  else
    put(i, k, false)
    index(member(k), s, nil)
    push(0, 0)
  end
end
if ARGV[4] == '1' then
  return OUT
end
finish()
return OUT
