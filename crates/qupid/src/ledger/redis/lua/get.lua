-- get: KEYS[11] the record. Reply: 'ok' followed by the record's fields, if it has one.
local err = prepare()
if err then
  return err
end
local k = KEYS[FIXED + 1]
local raw = rec(1, k)
if raw then
  local s, p, t, x, a, b, v, n, e = decode(k, raw)
  if not s then
    return p
  end
  OUT[2] = fields(s, p, t, x, a, b, v, n, e)
end
return OUT
