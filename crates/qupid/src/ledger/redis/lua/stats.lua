-- stats: Reply: the number of queued, running, completed and dead records.
local err = check_fixed()
if err then
  return err
end
for _, s in ipairs({ 'q', 'r', 'c', 'd' }) do
  push(redis.call('ZCARD', IDX[s]))
end
return OUT
