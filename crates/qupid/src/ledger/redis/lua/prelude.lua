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
--
-- Cost: most of a script's time is the Lua interpreter's, and in Lua 5.1 table writes (a hash
-- lookup each, and rehashing as a table grows) and string formatting are what it spends most
-- on, so the hot paths write few table fields: a record holds only the fields its hash has,
-- each transition writes (to the hash and the record) just the fields it changes, and index
-- moves are kept in arrays.

local call, rpcall = redis.call, redis.pcall
local tonumber, format, find, sub, min, unpack = tonumber, string.format, string.find,
    string.sub, math.min, unpack

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

-- Integers are kept below 2^53. '%d' writes them exactly where Lua's integer format is 64
-- bits wide (a C long: every 64-bit build of Redis but Windows') and costs half of '%.0f',
-- which is exact everywhere, so INT is '%d' when that works and '%.0f' otherwise.
local INT = format('%d', 2 ^ 52 + 1) == '4503599627370497' and '%d' or '%.0f'

-- Formatting is slow next to the rest of a script, and a batch writes few distinct values
-- (its lease expiry, its finish time, small attempt counts), so each is formatted once per
-- call. Tokens, all distinct, are formatted by new_token instead.
local INTS = {}
local function int(n)
  local t = INTS[n]
  if not t then
    t = format(INT, n)
    INTS[n] = t
  end
  return t
end

local function typeof(k)
  return call('TYPE', k)['ok']
end

local function is_int(s)
  return s ~= nil and string.match(s, '^%-?%d+$') ~= nil
end

-- A Redis error reply (from redis.pcall) other than WRONGTYPE is passed on as it is.
local function wrong_type(reply)
  return find(reply.err, 'WRONGTYPE', 1, true) ~= nil
end

-- The namespace-wide integers (KEYS[1..3]) as check_fixed read them: a number, or false.
local STORED = {}

-- Checks the namespace-wide keys: integer strings and sorted sets, or absent. One GET each
-- for the strings (a GET of another type fails with WRONGTYPE), one TYPE each for the sets.
local function check_fixed()
  for i = 1, 3 do
    local v = rpcall('GET', KEYS[i])
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

-- The integer fields of a record (t, x, a, b) joined by spaces, as load() checks them: one
-- match for all four (a field with a space in it would make more than four groups).
local FOUR_INTS = '^%-?%d+ %-?%d+ %-?%d+ %-?%d+$'

-- Reads a record hash with one HGETALL: false if there is none, or nil and an error reply if
-- it is not a record (a key of another type fails with WRONGTYPE, caught here, before any
-- write; a hash is never empty, so an empty reply means no key).
--
-- A record is a table of the fields its hash holds, as stored: s, t, x, a, b (strings, checked
-- to be integers but not converted: read them with tonumber), v, n, e, p when set (strings;
-- p is '1' when superseded), and raw, the HGETALL reply (for get and list, which write
-- nothing). Scripts keep the fields equal to the hash's: whoever writes a field to the hash
-- writes it to the record too (then as a number, for x, a and b), and clear() deletes both.
local function load(k)
  local raw = rpcall('HGETALL', k)
  if raw.err then
    if not wrong_type(raw) then
      return nil, raw
    end
    return nil, corrupt(k, 'a record hash', 'a ' .. typeof(k))
  end
  local len = #raw
  if len == 0 then
    return false
  end
  local s, t, x, a, b, v, n, e, p
  -- Fields come back in the order they were first written: s, t, x, a, b, then the others.
  for i = 1, len, 2 do
    local f = raw[i]
    if f == 's' then
      s = raw[i + 1]
    elseif f == 't' then
      t = raw[i + 1]
    elseif f == 'x' then
      x = raw[i + 1]
    elseif f == 'a' then
      a = raw[i + 1]
    elseif f == 'b' then
      b = raw[i + 1]
    elseif f == 'v' then
      v = raw[i + 1]
    elseif f == 'n' then
      n = raw[i + 1]
    elseif f == 'e' then
      e = raw[i + 1]
    elseif f == 'p' then
      p = raw[i + 1]
    end
  end
  if not (CODE[s] and t and x and a and b
      and find(t .. ' ' .. x .. ' ' .. a .. ' ' .. b, FOUR_INTS)) then
    return nil, corrupt(k, 'a record hash', 'a hash without valid s, t, x, a, b fields')
  end
  local r = { s = s, t = t, x = x, a = a, b = b, raw = raw }
  if v then
    r.v = v
  end
  if n then
    r.n = n
  end
  if e then
    r.e = e
  end
  if p then
    r.p = p
  end
  return r
end

-- Records of the batch, by record key: a table, or false for none.
local CACHE = {}

-- Whether a member may move between indexes more than once in this batch (see index()).
local NET = false

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
    else
      -- A key repeated in the batch: its member may move more than once.
      NET = true
    end
  end
  return nil
end

local function prepare()
  return check_fixed() or load_batch()
end

-- The arguments of clear()'s HDEL, reused.
local DEL = { 'HDEL' }

-- Deletes from record k (table r) those of the optional fields f1..f4 (each a name or nil)
-- that it has, in one HDEL.
local function clear(k, r, f1, f2, f3, f4)
  local nd = 2
  if f1 and r[f1] ~= nil then
    nd = nd + 1
    DEL[nd] = f1
    r[f1] = nil
  end
  if f2 and r[f2] ~= nil then
    nd = nd + 1
    DEL[nd] = f2
    r[f2] = nil
  end
  if f3 and r[f3] ~= nil then
    nd = nd + 1
    DEL[nd] = f3
    r[f3] = nil
  end
  if f4 and r[f4] ~= nil then
    nd = nd + 1
    DEL[nd] = f4
    r[f4] = nil
  end
  if nd > 2 then
    DEL[2] = k
    call(unpack(DEL, 1, nd))
  end
end

local function drop(k)
  call('DEL', k)
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
    local j = min(i + CHUNK - 1, n)
    if key then
      call(cmd, key, unpack(args, i, j))
    else
      call(cmd, unpack(args, i, j))
    end
    i = j + 1
  end
end

-- Index moves, applied by finish(): move i takes member MOVED[i] from the index of state
-- MFROM[i] to that of MTO[i] (false: none). A batch moves most members once, so the moves are
-- kept in arrays (cheap to grow, unlike tables keyed by member); when a member may move more
-- than once (its key is repeated in the batch, or a script moves it twice), the script sets
-- NET and finish() nets its moves first. Either way only the net move is written, with one
-- multi-member ZREM/ZADD per index for the whole batch.
local MOVED, MFROM, MTO, NMOVED = {}, {}, {}, 0
-- The finish time of the batch's moves into finished states (one per script: its now).
local AT = nil

-- Moves member m between state indexes; `at` is the finish time for finished states.
local function index(m, from, to, at)
  local n = NMOVED + 1
  NMOVED = n
  MOVED[n], MFROM[n], MTO[n] = m, from or false, to or false
  if at then
    AT = at
  end
end

-- The fencing-token counter, read once by check_fixed and written once by finish(). Answers
-- the new token as a number and as the string records hold.
local TOKEN = nil
local function new_token()
  local t = (TOKEN or STORED[1] or 0) + 1
  TOKEN = t
  return t, format(INT, t)
end

-- Writes what the batch deferred: the index moves and the token counter.
local function finish()
  local moved, mfrom, mto = MOVED, MFROM, MTO
  if NET then
    -- Each member's first move takes its last destination; its later moves are dropped.
    local first = {}
    for i = 1, NMOVED do
      local m = moved[i]
      local j = first[m]
      if j then
        mto[j] = mto[i]
        moved[i] = false
      else
        first[m] = i
      end
    end
  end
  local rem = { q = {}, r = {}, c = {}, d = {} }
  local add = { q = {}, r = {}, c = {}, d = {} }
  local fin = { c = {}, d = {} }
  local at = AT and int(AT)
  for i = 1, NMOVED do
    local m = moved[i]
    local from, to = mfrom[i], mto[i]
    if m and from ~= to then
      if from then
        local l = rem[from]
        l[#l + 1] = m
      end
      if to then
        local l = add[to]
        local j = #l
        l[j + 1] = '0'
        l[j + 2] = m
        local f = fin[to]
        if f then
          j = #f
          f[j + 1] = at
          f[j + 2] = m
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
  MOVED, MFROM, MTO, NMOVED = {}, {}, {}, 0
  if TOKEN then
    call('SET', KEYS[1], format(INT, TOKEN))
  end
end

-- The ledger's clock in ms: the server's TIME plus the namespace's offset, or the pinned time
-- (both as check_fixed read them).
local function now_ms()
  if STORED[3] then
    return STORED[3]
  end
  local t = call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + (STORED[2] or 0)
end

-- The user key of the record key k.
local function member(k)
  return sub(k, PLEN + 1)
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
