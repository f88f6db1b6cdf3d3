-- list: ARGV[2] the state letter, ARGV[3] list after this key ('' = from the start),
-- ARGV[4] how many. Reply: pairs of key, fields, in key (byte) order.
local err = check_fixed()
if err then
  return err
end
local s = ARGV[2]
local from = ARGV[3] == '' and '-' or ('(' .. ARGV[3])
local members = redis.call('ZRANGEBYLEX', IDX[s], from, '+', 'LIMIT', 0, tonumber(ARGV[4]))
for _, m in ipairs(members) do
  local k = PREFIX .. m
  local r, bad = load(k)
  if bad then
    return bad
  end
  if not r or r.s ~= s then
    return corrupt(k, 'a ' .. NAME[s] .. ' record (the key is indexed as one)',
      r and ('a ' .. NAME[r.s] .. ' record') or 'no record')
  end
  push(m, r.raw)
end
return OUT
