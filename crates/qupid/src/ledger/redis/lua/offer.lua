-- offer and offer-and-start: ARGV[3] lease ms, ARGV[4] crash cap (0 = none), ARGV[5] '1' to
-- remember newer versions, ARGV[6..7] blocking of completed, dead (-1 forever, -2 never, else a
-- window in ms), ARGV[8] '1' to start an attempt on every accepted key (offer-and-start: it is
-- Running, attempts + 1, where offer would queue it), ARGV[8 + i] the version of item i
-- ('' = none; versions are never empty), or no versions at all if no item has one.
-- Reply: the lease expiry of every accepted key, then per item: token, attempts (accepted; with
-- ARGV[8] '1', the attempt just started) | 0, state (duplicate) | -1, state (outdated) |
-- found, 0 (unreadable: what the record key holds, in words).
local err = prepare()
if err then
  return err
end
local lease = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local remember = ARGV[5] == '1'
local block = { c = tonumber(ARGV[6]), d = tonumber(ARGV[7]) }
-- The state an accepted key is left in, and the attempts it gains.
local START = ARGV[8] == '1'
local TO = START and 'r' or 'q'
local GAIN = START and 1 or 0
local now = now_ms()
local lease_until = now + lease

local function blocks(mode, at)
  if mode == -1 then
    return true
  elseif mode == -2 then
    return false
  end
  local since = now - at
  if since < 0 then
    since = 0
  end
  return since < mode
end

local X = int(lease_until)
push(lease_until)
-- A fresh record without a version, but for its token (the common case: built once).
local FRESH_HEAD = TO .. '0 '
local FRESH_TAIL = ' ' .. X .. ' ' .. GAIN .. ' 0 -1 -1 -1|'

-- A fresh record for k (Queued, or Running its first attempt), replacing whatever it had
-- (coming from state `from`).
local function fresh(i, k, m, v, from)
  local tn, token = new_token()
  if v then
    put(i, k, encode(TO, '0', token, X, GAIN, '0', v))
  else
    put(i, k, FRESH_HEAD .. token .. FRESH_TAIL)
  end
  index(m, from, TO)
  push(tn, GAIN)
end

for i = 1, #KEYS - FIXED do
  local k = KEYS[FIXED + i]
  local m = member(k)
  local v = ARGV[8 + i]
  if v == '' then
    v = nil
  end
  local f = ANY_FOREIGN and FOREIGN[k]
  local raw = not f and rec(i, k)
  local s, p, t, x, a, b, rv, rn, re
  if raw then
    s, p, t, x, a, b, rv, rn, re = decode(raw)
    if not s then
      f = NOT_A_RECORD
    end
  end
  if f then
    -- Not a record: nothing is written for it.
    push(f, 0)
  elseif not raw then
    fresh(i, k, m, v, nil)
  elseif v and outdated(v, rv, rn) then
    -- Older than a version the key has accepted: nothing changes, whatever its state.
    push(-1, CODE[s])
  else
    local done = false
    -- The index the key is in, if the finished-key rules must move it out of another.
    local moved = nil
    if LEASED[s] then
      if now < tonumber(x) then
        -- A valid lease: a duplicate, remembering a newer version for when it completes.
        if remember and v and rv ~= v and rn ~= v then
          put(i, k, encode(s, p, t, x, a, b, rv, v, re))
        end
        push(0, CODE[s])
        done = true
      else
        -- The holder's lease expired without an ending: it is abandoned.
        local from = s
        local nb = min(tonumber(b) + 1, MAX_COUNT)
        if cap > 0 and nb >= cap then
          s, x, b, re = 'd', int(now), int(nb), 'abandoned'
          put(i, k, encode(s, p, t, x, a, b, rv, nil, re))
          -- Falls through to the finished-key rules below, which move it from `moved`.
          moved = from
        else
          local tn, token = new_token()
          local na = min(tonumber(a) + GAIN, MAX_COUNT)
          put(i, k, encode(TO, p, token, X, int(na), int(nb), v, nil, re))
          index(m, from, TO)
          push(tn, na)
          done = true
        end
      end
    end
    if not done then
      -- Completed or Dead.
      local changed = v ~= nil and rv ~= v
      if not changed and p ~= '1' and blocks(block[s], tonumber(x)) then
        if moved then
          index(m, moved, 'd', now)
        end
        push(0, CODE[s])
      else
        fresh(i, k, m, v, moved or s)
      end
    end
  end
end
finish()
return OUT
