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
-- nothing. On success it returns {'ok', ...}. Record hashes are written as the batch goes;
-- index moves and the token counter are collected and written once, by finish(), which every
-- writing script calls before it returns.

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

-- Integers are kept below 2^53, so '%.0f' writes them exactly. Formatting is slow next to
-- the rest of a script, and a batch writes few distinct values (its lease expiry, small
-- attempt counts), so each is formatted once per call.
local INTS = {}
local function int(n)
  local t = INTS[n]
  if not t then
    t = string.format('%.0f', n)
    INTS[n] = t
  end
  return t
end

local function typeof(k)
  return redis.call('TYPE', k)['ok']
end

local function is_int(s)
  return s ~= nil and string.match(s, '^%-?%d+$') ~= nil
end

-- A Redis error reply (from redis.pcall) other than WRONGTYPE is passed on as it is.
local function wrong_type(reply)
  return string.find(reply.err, 'WRONGTYPE', 1, true) ~= nil
end

-- The namespace-wide integers (KEYS[1..3]) as check_fixed read them: a number, or false.
local STORED = {}

-- Checks the namespace-wide keys: integer strings and sorted sets, or absent. One GET each
-- for the strings (a GET of another type fails with WRONGTYPE), one TYPE each for the sets.
local function check_fixed()
  for i = 1, 3 do
    local v = redis.pcall('GET', KEYS[i])
    if type(v) == 'table' and v.err then
      if not wrong_type(v) then
        return v
      end
      return corrupt(KEYS[i], 'an integer string', 'a ' .. typeof(KEYS[i]))
    end
    if v and not is_int(v) then
      return corrupt(KEYS[i], 'an integer', 'a string that is not an integer')
    end
    STORED[i] = v and tonumber(v)
  end
  for i = 4, 9 do
    local t = typeof(KEYS[i])
    if t ~= 'none' and t ~= 'zset' then
      return corrupt(KEYS[i], 'a sorted set', 'a ' .. t)
    end
  end
  return nil
end

-- Where load() keeps each stored field of a record: field F as stored is r.F0.
local ORIG = { s = 's0', t = 't0', x = 'x0', a = 'a0', b = 'b0', v = 'v0', n = 'n0', e = 'e0', p = 'p0' }

-- Reads a record hash with one HGETALL: false if there is none, or nil and an error reply if
-- it is not a record (a key of another type fails with WRONGTYPE, caught here, before any
-- write; a hash is never empty, so an empty reply means no key).
--
-- A record holds its fields (s, t, x, a, b, v, n, e, and p as a boolean) and, as F0, each
-- field as stored (x0, a0, b0 as numbers, the others as strings or nil), so that store()
-- writes only the fields that changed.
local function load(k)
  local raw = redis.pcall('HGETALL', k)
  if raw.err then
    if not wrong_type(raw) then
      return nil, raw
    end
    return nil, corrupt(k, 'a record hash', 'a ' .. typeof(k))
  end
  if #raw == 0 then
    return false
  end
  local r = {
    s = nil, t = nil, x = nil, a = nil, b = nil, v = nil, n = nil, e = nil, p = nil,
    s0 = nil, t0 = nil, x0 = nil, a0 = nil, b0 = nil, v0 = nil, n0 = nil, e0 = nil, p0 = nil,
    raw = raw,
  }
  for i = 1, #raw, 2 do
    local o = ORIG[raw[i]]
    if o then
      r[o] = raw[i + 1]
    end
  end
  if not (CODE[r.s0] and is_int(r.t0) and is_int(r.x0) and is_int(r.a0) and is_int(r.b0)) then
    return nil, corrupt(k, 'a record hash', 'a hash without valid s, t, x, a, b fields')
  end
  local x, a, b = tonumber(r.x0), tonumber(r.a0), tonumber(r.b0)
  r.s, r.t, r.x, r.a, r.b, r.x0, r.a0, r.b0 = r.s0, r.t0, x, a, b, x, a, b
  r.v, r.n, r.e, r.p = r.v0, r.n0, r.e0, r.p0 == '1'
  return r
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

-- The arguments of store()'s HSET and HDEL, reused for every record (NSET, NDEL long).
local SET, NSET = {}, 0
local DEL, NDEL = {}, 0

local function put(f, val)
  SET[NSET + 1] = f
  SET[NSET + 2] = val
  NSET = NSET + 2
end

-- An optional field: set, or deleted if the record no longer has it.
local function opt(f, val, stored)
  if val == stored then
    return
  end
  if val ~= nil then
    put(f, val)
  else
    NDEL = NDEL + 1
    DEL[NDEL] = f
  end
end

-- Writes the fields of record r that differ from its hash as stored (r.F0; nil for a new
-- hash), deleting optional fields it no longer has.
local function store(k, r)
  SET[1], SET[2], NSET = 'HSET', k, 2
  DEL[1], DEL[2], NDEL = 'HDEL', k, 2
  if r.s ~= r.s0 then
    put('s', r.s)
  end
  if r.t ~= r.t0 then
    put('t', r.t)
  end
  if r.x ~= r.x0 then
    put('x', int(r.x))
  end
  if r.a ~= r.a0 then
    put('a', int(r.a))
  end
  if r.b ~= r.b0 then
    put('b', int(r.b))
  end
  local p = r.p and '1' or nil
  opt('v', r.v, r.v0)
  opt('n', r.n, r.n0)
  opt('e', r.e, r.e0)
  opt('p', p, r.p0)
  if NSET > 2 then
    redis.call(unpack(SET, 1, NSET))
  end
  if NDEL > 2 then
    redis.call(unpack(DEL, 1, NDEL))
  end
  r.s0, r.t0, r.x0, r.a0, r.b0 = r.s, r.t, r.x, r.a, r.b
  r.v0, r.n0, r.e0, r.p0 = r.v, r.n, r.e, p
  CACHE[k] = r
end

local function drop(k)
  redis.call('DEL', k)
  CACHE[k] = false
end

-- Runs `cmd key` (or `cmd` alone if key is nil) over `args`, at most CHUNK arguments per
-- call (Lua's unpack has a limit); nothing if args is empty. Chunks must be even-sized, so
-- that score-member pairs are never split.
local CHUNK = 4000
local function bulk(cmd, key, args)
  local n = #args
  local i = 1
  while i <= n do
    local j = math.min(i + CHUNK - 1, n)
    if key then
      redis.call(cmd, key, unpack(args, i, j))
    else
      redis.call(cmd, unpack(args, i, j))
    end
    i = j + 1
  end
end

-- Index moves, applied by finish(): per member, the state it was indexed in when first moved
-- (false: none), the one it ends in, and its finish time. Only the net move is written, with
-- one multi-member ZREM/ZADD per index for the whole batch.
local MOVED = {}
local MFROM, MTO, MAT = {}, {}, {}

-- Moves member m between state indexes; `at` is the finish time for finished states.
local function index(m, from, to, at)
  if MFROM[m] == nil then
    MFROM[m] = from or false
    MOVED[#MOVED + 1] = m
  end
  MTO[m] = to or false
  MAT[m] = at
end

-- The fencing-token counter, read once by check_fixed and written once by finish().
local TOKEN = nil
local function new_token()
  TOKEN = (TOKEN or STORED[1] or 0) + 1
  return int(TOKEN)
end

-- Writes what the batch deferred: the index moves and the token counter.
local function finish()
  local rem = { q = {}, r = {}, c = {}, d = {} }
  local add = { q = {}, r = {}, c = {}, d = {} }
  local fin = { c = {}, d = {} }
  for _, m in ipairs(MOVED) do
    local from, to = MFROM[m], MTO[m]
    if from ~= to then
      if from then
        local l = rem[from]
        l[#l + 1] = m
      end
      if to then
        local l = add[to]
        l[#l + 1] = '0'
        l[#l + 1] = m
        local f = fin[to]
        if f then
          f[#f + 1] = int(MAT[m])
          f[#f + 1] = m
        end
      end
    end
  end
  for s, l in pairs(rem) do
    bulk('ZREM', IDX[s], l)
    if FIN[s] then
      bulk('ZREM', FIN[s], l)
    end
  end
  for s, l in pairs(add) do
    bulk('ZADD', IDX[s], l)
  end
  for s, l in pairs(fin) do
    bulk('ZADD', FIN[s], l)
  end
  MOVED, MFROM, MTO, MAT = {}, {}, {}, {}
  if TOKEN then
    redis.call('SET', KEYS[1], int(TOKEN))
  end
end

-- The ledger's clock in ms: the server's TIME plus the namespace's offset, or the pinned time
-- (both as check_fixed read them).
local function now_ms()
  if STORED[3] then
    return STORED[3]
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + (STORED[2] or 0)
end

-- The user key of the record key k.
local function member(k)
  return string.sub(k, PLEN + 1)
end

-- Whether the claim's token is the record's current one.
local function held(r, token)
  return r and r.t == token
end

-- Appends up to four values to the reply (all given ones are non-nil).
local OUT = { 'ok' }
local NOUT = 1
local function push(a, b, c, d)
  NOUT = NOUT + 1
  OUT[NOUT] = a
  if b ~= nil then
    NOUT = NOUT + 1
    OUT[NOUT] = b
    if c ~= nil then
      NOUT = NOUT + 1
      OUT[NOUT] = c
      if d ~= nil then
        NOUT = NOUT + 1
        OUT[NOUT] = d
      end
    end
  end
end

