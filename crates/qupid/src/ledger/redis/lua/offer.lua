-- offer: ARGV[2] lease ms, ARGV[3] crash cap (0 = none), ARGV[4] '1' to remember newer
-- versions, ARGV[5..6] blocking of completed, dead (-1 forever, -2 never, else a window in ms),
-- ARGV[6 + i] the version of item i ('' = none; versions are never empty).
-- Reply per item: 1, token, expires_at, attempts (accepted) or 0, state, 0, 0 (duplicate).
local err = prepare()
if err then
  return err
end
local lease = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local remember = ARGV[4] == '1'
local block = { c = tonumber(ARGV[5]), d = tonumber(ARGV[6]) }
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

-- A fresh Queued record for k, replacing whatever it had (coming from state `from`).
local function fresh(k, m, v, from)
  local old = CACHE[k]
  local token = new_token()
  local r = {
    s = 'q', t = token, x = lease_until, a = 0, b = 0, v = v, n = nil, e = nil, p = false,
    s0 = nil, t0 = nil, x0 = nil, a0 = nil, b0 = nil, v0 = nil, n0 = nil, e0 = nil, p0 = nil,
  }
  if old then
    r.s0, r.t0, r.x0, r.a0, r.b0 = old.s0, old.t0, old.x0, old.a0, old.b0
    r.v0, r.n0, r.e0, r.p0 = old.v0, old.n0, old.e0, old.p0
  end
  store(k, r)
  index(m, from, 'q', lease_until)
  push(1, tonumber(token), lease_until, 0)
end

for i = 1, #KEYS - FIXED do
  local k = KEYS[FIXED + i]
  local m = member(k)
  local v = ARGV[6 + i]
  if v == '' then
    v = nil
  end
  local r = CACHE[k]
  if not r then
    fresh(k, m, v, nil)
  else
    local done = false
    if LEASED[r.s] then
      if now < r.x then
        -- A valid lease: a duplicate, remembering a newer version for when it completes.
        if remember and v and r.v ~= v then
          r.n = v
          store(k, r)
        end
        push(0, CODE[r.s], 0, 0)
        done = true
      else
        -- The holder's lease expired without an ending: it is abandoned.
        local from = r.s
        r.b = math.min(r.b + 1, MAXU16)
        if cap > 0 and r.b >= cap then
          r.s, r.x, r.e, r.n = 'd', now, 'abandoned', nil
          store(k, r)
          index(m, from, 'd', now)
          -- Falls through to the finished-key rules below.
        else
          r.t, r.x, r.v, r.n, r.s = new_token(), lease_until, v, nil, 'q'
          store(k, r)
          index(m, from, 'q', lease_until)
          push(1, tonumber(r.t), lease_until, r.a)
          done = true
        end
      end
    end
    if not done then
      -- Completed or Dead.
      local changed = v ~= nil and r.v ~= v
      if not changed and not r.p and blocks(block[r.s], r.x) then
        push(0, CODE[r.s], 0, 0)
      else
        fresh(k, m, v, r.s)
      end
    end
  end
end
finish()
return OUT
