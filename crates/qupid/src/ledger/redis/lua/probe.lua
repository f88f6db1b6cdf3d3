-- probe: what the namespace holds, for connect (which writes nothing). Fails like every
-- script on a damaged namespace or a layout it does not know. Reply: how many of the
-- namespace-wide keys (KEYS[1..10]) exist (0 for a new namespace).
local err = check_fixed()
if err then
  return err
end
local n = call('EXISTS', unpack(KEYS, 1, FIXED))
push(n)
return OUT
