-- qupid: the prelude of every script (see crates/qupid/src/ledger/redis/mod.rs for the layout).
--
-- KEYS[1] fencing-token counter      KEYS[2] clock offset (ms)     KEYS[3] pinned clock (ms)
-- KEYS[4..7] key-ordered indexes of queued, running, completed, dead (sorted sets, score 0)
-- KEYS[8..9] finish-time indexes of completed, dead (sorted sets, score = finish time in ms)
-- KEYS[10..] the record hashes of the batch, in the caller's order
-- ARGV[1]    the record-key prefix: a record's key is ARGV[1] .. the user's key
--
-- User keys are binary (any UTF-8, NUL and newlines included). They are only ever used whole:
-- as a Redis key, a sorted-set member or a ZRANGEBYLEX bound, never inside a pattern.
--
-- A script never fails half-way: everything it may touch is read and checked first, so a
-- foreign or damaged key makes it return {'corrupt', key, expected, found} having written
-- nothing. On success it returns {'ok', ...}.

local PREFIX = ARGV[1]
local PLEN = #PREFIX
local FIXED = 9
local CODE = { q = 0, r = 1, c = 2, d = 3 }
local IDX = { q = KEYS[4], r = KEYS[5], c = KEYS[6], d = KEYS[7] }
local FIN = { c = KEYS[8], d = KEYS[9] }
local NAME = { q = 'queued', r = 'running', c = 'completed', d = 'dead' }
local LEASED = { q = true, r = true }
-- Attempts and abandonments saturate here, as in the memory ledger.
local MAXU16 = 65535

local function corrupt(key, want, found)
  return { 'corrupt', key, want, found }
end

-- Integers are kept below 2^53, so '%.0f' writes them exactly.
local function int(n)
  return string.format('%.0f', n)
end

local function typeof(k)
  return redis.call('TYPE', k)['ok']
end

local function is_int(s)
  return s ~= nil and string.match(s, '^%-?%d+$') ~= nil
end

-- Checks the namespace-wide keys: integer strings and sorted sets, or absent.
local function check_fixed()
  for i = 1, 3 do
    local t = typeof(KEYS[i])
    if t == 'string' then
      if not is_int(redis.call('GET', KEYS[i])) then
        return corrupt(KEYS[i], 'an integer', 'a string that is not an integer')
      end
    elseif t ~= 'none' then
      return corrupt(KEYS[i], 'an integer string', 'a ' .. t)
    end
  end
  for i = 4, 9 do
    local t = typeof(KEYS[i])
    if t ~= 'none' and t ~= 'zset' then
      return corrupt(KEYS[i], 'a sorted set', 'a ' .. t)
    end
  end
  return nil
end

-- Reads a record hash: false if there is none, or nil and a corrupt reply if it is not one.
local function load(k)
  local t = typeof(k)
  if t == 'none' then
    return false
  end
  if t ~= 'hash' then
    return nil, corrupt(k, 'a record hash', 'a ' .. t)
  end
  local raw = redis.call('HGETALL', k)
  local f = {}
  for i = 1, #raw, 2 do
    f[raw[i]] = raw[i + 1]
  end
  if not (CODE[f.s] and is_int(f.t) and is_int(f.x) and is_int(f.a) and is_int(f.b)) then
    return nil, corrupt(k, 'a record hash', 'a hash without valid s, t, x, a, b fields')
  end
  return {
    s = f.s, t = f.t, x = tonumber(f.x), a = tonumber(f.a), b = tonumber(f.b),
    v = f.v, n = f.n, e = f.e, p = f.p == '1',
    had = { v = f.v ~= nil, n = f.n ~= nil, e = f.e ~= nil, p = f.p ~= nil },
    raw = raw,
  }
end

-- Records of the batch, by record key: a table, or false for none.
local CACHE = {}

-- Loads every record of the batch before anything is written.
local function load_batch()
  for i = FIXED + 1, #KEYS do
    local k = KEYS[i]
    if CACHE[k] == nil then
      local r, err = load(k)
      if err then
        return err
      end
      CACHE[k] = r
    end
  end
  return nil
end

local function prepare()
  return check_fixed() or load_batch()
end

local OPTIONAL = { 'v', 'n', 'e', 'p' }

-- Writes a record back whole, deleting optional fields it no longer has.
local function store(k, r)
  local set = { 'HSET', k, 's', r.s, 't', r.t, 'x', int(r.x), 'a', int(r.a), 'b', int(r.b) }
  local del = { 'HDEL', k }
  for _, f in ipairs(OPTIONAL) do
    local val = r[f]
    if f == 'p' then
      val = r.p and '1' or nil
    end
    if val ~= nil then
      set[#set + 1] = f
      set[#set + 1] = val
      r.had[f] = true
    elseif r.had[f] then
      del[#del + 1] = f
      r.had[f] = false
    end
  end
  redis.call(unpack(set))
  if #del > 2 then
    redis.call(unpack(del))
  end
  CACHE[k] = r
end

local function drop(k)
  redis.call('DEL', k)
  CACHE[k] = false
end

-- Moves member m between state indexes; `at` is the finish time for finished states.
local function index(m, from, to, at)
  if from == to then
    return
  end
  if from then
    redis.call('ZREM', IDX[from], m)
    if FIN[from] then
      redis.call('ZREM', FIN[from], m)
    end
  end
  if to then
    redis.call('ZADD', IDX[to], 0, m)
    if FIN[to] then
      redis.call('ZADD', FIN[to], int(at), m)
    end
  end
end

-- The ledger's clock in ms: the server's TIME plus the namespace's offset, or the pinned time.
local function now_ms()
  local pinned = redis.call('GET', KEYS[3])
  if pinned then
    return tonumber(pinned)
  end
  local t = redis.call('TIME')
  local offset = tonumber(redis.call('GET', KEYS[2])) or 0
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + offset
end

-- The user key of the record key k.
local function member(k)
  return string.sub(k, PLEN + 1)
end

local function new_token()
  return int(redis.call('INCR', KEYS[1]))
end

-- Whether the claim's token is the record's current one.
local function held(r, token)
  return r and r.t == token
end

-- Appends values to the reply.
local OUT = { 'ok' }
local function push(...)
  for _, v in ipairs({ ... }) do
    OUT[#OUT + 1] = v
  end
end

