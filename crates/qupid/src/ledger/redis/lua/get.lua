-- get: KEYS[10] the record. Reply: 'ok' followed by the record's fields, if it has one.
local err = prepare()
if err then
  return err
end
local r = CACHE[KEYS[FIXED + 1]]
if r then
  OUT[2] = r.raw
end
return OUT
