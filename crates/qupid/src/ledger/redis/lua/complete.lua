-- complete: ARGV[2 + i] the token of claim i.
-- Reply per item, one value: the integer 0 completed | 1 completed, superseded | 2 lease lost |
-- 3 + state (wrong state); or a string, what the record key holds (unreadable).
local err = prepare()
if err then
  return err
end
local now = now_ms()
local X = int(now)
-- The common record, matched without decoding it all: Running, not superseded, no newer
-- version (the length of n is -1). Captures the token, the fields from the attempts to the
-- '|' (kept as they are), the lengths of the version and the error, and where they start.
local RUNNING = '^r0 (%d+) %-?%d+ (%d+ %d+ (%-?%d+) %-1 (%-?%d+)|)()'
for i = 1, #KEYS - FIXED do
  local k = KEYS[FIXED + i]
  local raw = rec(i, k)
  local token = ARGV[2 + i]
  local t, mid, lv, le, pos
  if raw then
    t, mid, lv, le, pos = match(raw, RUNNING)
  end
  if t == token and lv == '-1' and le == '-1' and pos == #raw + 1 then
    -- Only the header changes.
    put(i, k, 'c0 ' .. t .. ' ' .. X .. ' ' .. mid)
    push(0)
    index(member(k), 'r', 'c', now)
  else
    local _, s, p, rt, x, a, b, v, n, e = item(i)
    if s == BAD then
      push(p)
    elseif not s or rt ~= token then
      push(2)
    elseif s ~= 'r' then
      push(3 + CODE[s])
    else
      -- A newer version seen in flight leaves the key processable again at once.
      if n ~= nil and n ~= v then
        put(i, k, encode('c', '1', rt, X, a, b, v, nil, e))
        push(1)
      else
        put(i, k, encode('c', '0', rt, X, a, b, v, nil, e))
        push(0)
      end
      index(member(k), 'r', 'c', now)
    end
  end
end
finish()
return OUT
