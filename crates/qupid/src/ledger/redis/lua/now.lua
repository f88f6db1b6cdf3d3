-- now: Reply: the ledger's clock in ms.
local err = check_fixed()
if err then
  return err
end
push(now_ms())
return OUT
