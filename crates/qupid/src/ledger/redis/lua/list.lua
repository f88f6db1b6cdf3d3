-- list: ARGV[2] the state letter, ARGV[3] list after this key ('' = from the start),
-- ARGV[4] how many. Reply: pairs of key, fields, in key (byte) order.
local err = check_fixed()
if err then
  return err
end
local want = ARGV[2]
local from = ARGV[3] == '' and '-' or ('(' .. ARGV[3])
local members = redis.call('ZRANGEBYLEX', IDX[want], from, '+', 'LIMIT', 0, tonumber(ARGV[4]))
for _, m in ipairs(members) do
  local k = PREFIX .. m
  local raw, bad = read(k)
  if bad then
    return bad
  end
  local s, p, t, x, a, b, v, n, e
  if raw then
    s, p, t, x, a, b, v, n, e = decode(raw)
    if not s then
      return unreadable(k, NOT_A_RECORD)
    end
  end
  if s ~= want then
    return corrupt(k, 'a ' .. NAME[want] .. ' record (the key is indexed as one)',
      s and ('a ' .. NAME[s] .. ' record') or 'no record')
  end
  push(m, fields(s, p, t, x, a, b, v, n, e))
end
return OUT
