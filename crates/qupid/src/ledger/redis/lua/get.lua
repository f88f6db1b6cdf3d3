-- get: KEYS[11] the record. Reply: 'ok' followed by the record's fields, if it has one.
local err = prepare()
if err then
  return err
end
local k, s, p, t, x, a, b, v, n, e = item(1)
if s == BAD then
  return unreadable(k, p)
end
if s then
  OUT[2] = fields(s, p, t, x, a, b, v, n, e)
end
return OUT
