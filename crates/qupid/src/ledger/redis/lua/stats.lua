-- stats: ARGV[2] the leased state ('q' or 'r') to go on counting expired leases in ('' = from
-- the start), ARGV[3] the member to go on after ('' = from the start of that state), ARGV[4]
-- the most leased records to read in this call, ARGV[5] the clock to count by ('' = read it:
-- the first call reads it, and the caller passes it on to the next ones).
-- Reply: the number of queued, running, completed and dead records; the expired leases among
-- the leased records read; the state and member to go on from ('' and '' once all were
-- read); the clock counted by.
--
-- No index is scored by lease expiry (every renewal would have to move the key in it), so the
-- expired leases are counted by reading the leased records themselves: their members from
-- the queued and running indexes, their records with MGET, and the expiry from each record's
-- head. A key that holds no record string (MGET answers nil) is skipped: stats counts, it
-- does not judge records.
local err = check_fixed()
if err then
  return err
end
for _, s in ipairs({ 'q', 'r', 'c', 'd' }) do
  push(call('ZCARD', IDX[s]))
end
local now = ARGV[5] == '' and now_ms() or tonumber(ARGV[5])
local budget = tonumber(ARGV[4])
local EXPIRY = '^[qr][01] %d+ (%-?%d+) '
local STATES = { 'q', 'r' }
local si = ARGV[2] == 'r' and 2 or 1
local after = ARGV[3]
local expired = 0
local next_s, next_m = '', ''
while si <= #STATES do
  local s = STATES[si]
  local from = after == '' and '-' or ('(' .. after)
  local members = call('ZRANGEBYLEX', IDX[s], from, '+', 'LIMIT', 0, budget)
  local n = #members
  local i = 1
  while i <= n do
    local j = min(i + CHUNK - 1, n)
    local keys = {}
    for o = i, j do
      keys[o - i + 1] = PREFIX .. members[o]
    end
    local vals = call('MGET', unpack(keys))
    for o = 1, #keys do
      local raw = vals[o]
      if raw then
        local x = match(raw, EXPIRY)
        if x and tonumber(x) <= now then
          expired = expired + 1
        end
      end
    end
    i = j + 1
  end
  budget = budget - n
  if budget <= 0 then
    next_s, next_m = s, members[n]
    break
  end
  si = si + 1
  after = ''
end
push(expired, next_s, next_m, now)
return OUT
