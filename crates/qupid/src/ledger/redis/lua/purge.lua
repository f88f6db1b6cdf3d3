-- purge: ARGV[2..3] completed max age ms, max count; ARGV[4..5] the same for dead (-1 = no
-- limit); ARGV[6] the most records to remove in this call (the caller loops while more remain,
-- so one call never blocks the server for long); ARGV[7..8] a cut of the completed records
-- ('' = none): every record finished before the time ARGV[7] goes, and the first ARGV[8] of
-- those finished at it (a sharded namespace's purge by count, found over every shard);
-- ARGV[9..10] the same for dead; ARGV[11] the clock to purge by ('' = read it: the first call
-- of a purge reads it, and the caller passes it on, so the cutoff by age stays where it was
-- when the purge began).
-- Reply: completed removed, dead removed, 1 if more remain, the clock purged by.
local err = check_fixed()
if err then
  return err
end
local now = ARGV[11] ~= '' and tonumber(ARGV[11]) or now_ms()
local budget = tonumber(ARGV[6])
local more = 0
local plan = {}
for j, s in ipairs({ 'c', 'd' }) do
  local age = tonumber(ARGV[2 * j])
  local count = tonumber(ARGV[2 * j + 1])
  -- The records to go are the oldest ones, (finish time, key) ascending, so always a prefix
  -- of the finish-time index: as long as the longer of "too old" and "beyond the count".
  local total = 0
  if age >= 0 then
    local cutoff = age == 0 and '+inf' or int(now - age)
    total = redis.call('ZCOUNT', FIN[s], '-inf', cutoff)
  end
  if count >= 0 then
    total = math.max(total, redis.call('ZCARD', FIN[s]) - count)
  end
  local cut = ARGV[5 + 2 * j]
  if cut ~= '' then
    local at_cut = redis.call('ZCOUNT', FIN[s], cut, cut)
    total = math.max(total, redis.call('ZCOUNT', FIN[s], '-inf', '(' .. cut)
      + math.min(tonumber(ARGV[6 + 2 * j]), at_cut))
  end
  local take = math.min(total, budget)
  budget = budget - take
  if total > take then
    more = 1
  end
  plan[s] = take > 0 and redis.call('ZRANGE', FIN[s], 0, take - 1) or {}
end
-- Check every record first, so a damaged one stops the purge before anything is deleted.
for _, s in ipairs({ 'c', 'd' }) do
  for _, m in ipairs(plan[s]) do
    local k = PREFIX .. m
    local raw, bad = read(k)
    if bad then
      return bad
    end
    local found
    if raw then
      found = decode(raw)
      if not found then
        return unreadable(k, NOT_A_RECORD)
      end
    end
    if found ~= s then
      return corrupt(k, 'a ' .. NAME[s] .. ' record (the key is indexed as one)',
        found and ('a ' .. NAME[found] .. ' record') or 'no record')
    end
  end
end
for _, s in ipairs({ 'c', 'd' }) do
  local keys = {}
  for i, m in ipairs(plan[s]) do
    keys[i] = PREFIX .. m
  end
  bulk('DEL', nil, keys)
  bulk('ZREM', IDX[s], plan[s])
  bulk('ZREM', FIN[s], plan[s])
end
return { 'ok', #plan.c, #plan.d, more, now }
