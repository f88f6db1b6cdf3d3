-- offer and offer-and-start: ARGV[2] lease ms, ARGV[3] crash cap (0 = none), ARGV[4] '1' to
-- remember newer versions, ARGV[5..6] blocking of completed, dead (-1 forever, -2 never, else a
-- window in ms), ARGV[7] '1' to start an attempt on every accepted key (offer-and-start: it is
-- Running, attempts + 1, where offer would queue it), ARGV[7 + i] the version of item i
-- ('' = none; versions are never empty), or no versions at all if no item has one.
-- Reply per item: 1, token, expires_at, attempts (accepted; with ARGV[7] '1', the attempt just
-- started) or 0, state, 0, 0 (duplicate).
local err = prepare()
if err then
  return err
end
local lease = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local remember = ARGV[4] == '1'
local block = { c = tonumber(ARGV[5]), d = tonumber(ARGV[6]) }
-- The state an accepted key is left in, and the attempts it gains.
local START = ARGV[7] == '1'
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
local A = int(GAIN)

-- A fresh record for k (Queued, or Running its first attempt), replacing whatever it had
-- (coming from state `from`).
local function fresh(k, m, v, from)
  local old = CACHE[k]
  local tn, token = new_token()
  if v then
    call('HSET', k, 's', TO, 't', token, 'x', X, 'a', A, 'b', '0', 'v', v)
  else
    call('HSET', k, 's', TO, 't', token, 'x', X, 'a', A, 'b', '0')
  end
  if old then
    clear(k, old, not v and 'v' or nil, 'n', 'e', 'p')
  end
  CACHE[k] = { s = TO, t = token, x = lease_until, a = GAIN, b = 0, v = v }
  index(m, from, TO)
  push(1, tn, lease_until, GAIN)
end

for i = 1, #KEYS - FIXED do
  local k = KEYS[FIXED + i]
  local m = member(k)
  local v = ARGV[7 + i]
  if v == '' then
    v = nil
  end
  local r = CACHE[k]
  if not r then
    fresh(k, m, v, nil)
  else
    local done = false
    if LEASED[r.s] then
      if now < tonumber(r.x) then
        -- A valid lease: a duplicate, remembering a newer version for when it completes.
        if remember and v and r.v ~= v and r.n ~= v then
          call('HSET', k, 'n', v)
          r.n = v
        end
        push(0, CODE[r.s], 0, 0)
        done = true
      else
        -- The holder's lease expired without an ending: it is abandoned.
        local from = r.s
        local b = min(tonumber(r.b) + 1, MAXU16)
        if cap > 0 and b >= cap then
          call('HSET', k, 's', 'd', 'x', int(now), 'b', int(b), 'e', 'abandoned')
          r.s, r.x, r.b, r.e = 'd', now, b, 'abandoned'
          clear(k, r, 'n')
          index(m, from, 'd', now)
          -- Falls through to the finished-key rules below (which may move it again).
          NET = true
        else
          local tn, token = new_token()
          local a = min(tonumber(r.a) + GAIN, MAXU16)
          if v then
            call('HSET', k, 's', TO, 't', token, 'x', X, 'a', int(a), 'b', int(b), 'v', v)
          else
            call('HSET', k, 's', TO, 't', token, 'x', X, 'a', int(a), 'b', int(b))
          end
          clear(k, r, not v and 'v' or nil, 'n')
          r.s, r.t, r.x, r.a, r.b, r.v = TO, token, lease_until, a, b, v
          index(m, from, TO)
          push(1, tn, lease_until, a)
          done = true
        end
      end
    end
    if not done then
      -- Completed or Dead.
      local changed = v ~= nil and r.v ~= v
      if not changed and r.p ~= '1' and blocks(block[r.s], tonumber(r.x)) then
        push(0, CODE[r.s], 0, 0)
      else
        fresh(k, m, v, r.s)
      end
    end
  end
end
finish()
return OUT
