-- probe: what the namespace holds, for a read-only open (which writes nothing, so neither
-- migrates nor creates). Reply: how many of the namespace-wide keys (KEYS[1..10]) exist, the
-- layout marker ('' if none), and '1' if the token counter exists ('0' if not): tokens without
-- a marker are the records of layout 1.
local err = check_fixed(true)
if err then
  return err
end
local n = call('EXISTS', unpack(KEYS, 1, FIXED))
push(n, call('GET', KEYS[10]) or '', STORED[1] and '1' or '0')
return OUT
