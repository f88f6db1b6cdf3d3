-- migrate: converts the records of layout 1 (one hash per record, fields s, t, x, a, b and
-- optionally v, n, e, p) to record strings, walking the state indexes in order, at most
-- ARGV[4] records per call; the caller loops. ARGV[2] the state to go on with ('' = the
-- first), ARGV[3] the member to go on after ('' = from the start of that state).
-- Reply: the state and member to go on from ('' and '' once done: the marker is then
-- written) and how many records this call converted.
local err = check_fixed(true)
if err then
  return err
end
if call('GET', KEYS[10]) or not STORED[1] then
  -- The current layout already, or a new namespace (which gets its marker with its first
  -- token).
  return { 'ok', '', '', 0 }
end
local ORDER = { 'q', 'r', 'c', 'd' }
local si = 1
for i, s in ipairs(ORDER) do
  if s == ARGV[2] then
    si = i
  end
end
local after = ARGV[3]
local budget = tonumber(ARGV[4])
local FOUR_INTS = '^%-?%d+ %-?%d+ %-?%d+ %-?%d+$'
local converted = 0
while si <= #ORDER do
  local want = ORDER[si]
  local from = after == '' and '-' or ('(' .. after)
  local members = call('ZRANGEBYLEX', IDX[want], from, '+', 'LIMIT', 0, budget)
  -- Every record of the chunk is read and checked before the first is written.
  local writes = {}
  for _, m in ipairs(members) do
    local k = PREFIX .. m
    local t = typeof(k)
    if t == 'hash' then
      local f = {}
      local raw = call('HGETALL', k)
      for i = 1, #raw, 2 do
        f[raw[i]] = raw[i + 1]
      end
      if not (CODE[f.s] and f.t and f.x and f.a and f.b
          and find(f.t .. ' ' .. f.x .. ' ' .. f.a .. ' ' .. f.b, FOUR_INTS)) then
        return corrupt(k, 'a record hash of layout 1', 'a hash without valid s, t, x, a, b fields')
      end
      writes[#writes + 1] = k
      writes[#writes + 1] = encode(f.s, f.p == '1' and '1' or '0', f.t, f.x, f.a, f.b, f.v, f.n,
        f.e)
    elseif t ~= 'string' and t ~= 'none' then
      return corrupt(k, 'a record hash of layout 1', 'a ' .. t)
    end
  end
  -- SET replaces a key of any type.
  bulk('MSET', nil, writes)
  converted = converted + #writes / 2
  budget = budget - #members
  if budget <= 0 then
    return { 'ok', want, members[#members], converted }
  end
  si = si + 1
  after = ''
end
call('SET', KEYS[10], LAYOUT)
return { 'ok', '', '', converted }
