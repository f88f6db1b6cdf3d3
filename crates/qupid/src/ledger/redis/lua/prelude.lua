-- qupid: the prelude of every script (see crates/qupid/src/ledger/redis/mod.rs for the layout).
--
-- KEYS[1] fencing-token counter      KEYS[2] clock offset (ms)     KEYS[3] pinned clock (ms)
-- KEYS[4..7] key-ordered indexes of queued, running, completed, dead (sorted sets, score 0)
-- KEYS[8..9] finish-time indexes of completed, dead (sorted sets, score = finish time in ms)
-- KEYS[10]   the layout marker ('1'; written with the first token)
-- KEYS[11..] the records of the batch (batch scripts), in the caller's order
-- ARGV[1]    the record-key prefix: a record's key is ARGV[1] .. the user's key
-- ARGV[2]    in batch scripts (those over records): '1' if no key is in the batch twice
--
-- User keys are binary (any UTF-8, NUL and newlines included). They are only ever used whole:
-- as a Redis key, a sorted-set member or a ZRANGEBYLEX bound, never inside a pattern.
--
-- A record is one string (see encode()). A batch script reads all of its records with one
-- MGET, works on them in Lua, and writes everything at the end, in finish(): the changed
-- records with one MSET (and one DEL for the removed ones), the index moves with one
-- multi-member ZADD or ZREM per index, the token counter with one SET. A script that finds
-- a damaged namespace key (the token counter, an index, the layout marker) returns
-- {'corrupt', key, expected, found} before finish(), so it has written nothing. A record key
-- of the batch holding something else than a record (another type, a string that does not
-- decode) is an answer for that item alone: the batch scripts answer it as unreadable (the
-- item's first reply value is then a string saying what was found, where it is otherwise an
-- integer), write nothing for it, and go on with the others. On success a script returns
-- {'ok', ...}.
--
-- Cost: most of a script's time is the Lua interpreter's and its conversions of Redis
-- replies, so the hot paths make no Redis call per key, decode a record into locals (no
-- table), and format each repeated integer once.

local call, rpcall = redis.call, redis.pcall
local tonumber, format, find, sub, match, byte, min, unpack = tonumber, string.format,
    string.find, string.sub, string.match, string.byte, math.min, unpack

local PREFIX = ARGV[1]
local PLEN = #PREFIX
local FIXED = 10
local LAYOUT = '1'
local CODE = { q = 0, r = 1, c = 2, d = 3 }
local IDX = { q = KEYS[4], r = KEYS[5], c = KEYS[6], d = KEYS[7] }
local FIN = { c = KEYS[8], d = KEYS[9] }
local NAME = { q = 'queued', r = 'running', c = 'completed', d = 'dead' }
local LEASED = { q = true, r = true }
-- Attempts and abandonments saturate here: qupid::ledger::rules::MAX_COUNT.
local MAX_COUNT = 65535

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
  return s ~= nil and match(s, '^%-?%d+$') ~= nil
end

-- A Redis error reply (from redis.pcall) other than WRONGTYPE is passed on as it is.
local function wrong_type(reply)
  return find(reply.err, 'WRONGTYPE', 1, true) ~= nil
end

-- The namespace-wide integers (KEYS[1..3]) as check_fixed read them: a number, or false.
local STORED = {}

-- Checks the namespace-wide keys: integer strings and sorted sets, or absent, and the layout
-- marker. One GET each for the strings (a GET of another type fails with WRONGTYPE), one TYPE
-- each for the sets.
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
  local layout = rpcall('GET', KEYS[10])
  if type(layout) == 'table' and layout.err then
    return corrupt(KEYS[10], 'the string ' .. LAYOUT, 'a ' .. typeof(KEYS[10]))
  end
  if layout then
    if layout ~= LAYOUT then
      return corrupt(KEYS[10], 'layout ' .. LAYOUT,
        'layout ' .. layout .. ' (written by a newer qupid?)')
    end
  elseif STORED[1] then
    -- Every build writes the marker with the namespace's first token.
    return corrupt(KEYS[10], 'layout ' .. LAYOUT,
      'no layout marker beside a token counter (a damaged namespace, or another program\'s keys)')
  end
  return nil
end

-- A record is one string: a header of the state letter (q, r, c, d) and the superseded flag
-- (0, 1), then, space-separated, the token, the time (lease expiry while leased, finish time
-- once finished; ms), attempts, times abandoned, and the byte lengths of the version, the
-- newer version and the last error (-1 when absent), then '|' and those three strings, end to
-- end. For example 'c0 17 1700000000000 1 0 2 -1 -1|v1'. The integers stay digit strings in
-- Lua: scripts compare and copy them, and convert only the ones they compute with.
local RECORD = '^([qrcd])([01]) (%d+) (%-?%d+) (%d+) (%d+) (%-?%d+) (%-?%d+) (%-?%d+)|()'

-- One optional string of a record: the string of length l at pos (none when l is -1), and
-- where the next starts; false if l is not a length.
local function part(raw, pos, l)
  l = tonumber(l)
  if l == -1 then
    return nil, pos
  elseif l >= 0 then
    return sub(raw, pos, pos + l - 1), pos + l
  end
  return false, pos
end

-- What a record key holds when it is not a record string, in words.
local NOT_A_RECORD = 'a string that is not a qupid record'

-- The fields of record raw: s, p, t, x, a, b, v, n, e; or nil if it is not a record.
local function decode(raw)
  local s, p, t, x, a, b, lv, ln, le, pos = match(raw, RECORD)
  if s then
    if lv == '-1' and ln == '-1' and le == '-1' then
      if pos == #raw + 1 then
        return s, p, t, x, a, b
      end
    else
      local v, n, e
      v, pos = part(raw, pos, lv)
      n, pos = part(raw, pos, ln)
      e, pos = part(raw, pos, le)
      if v ~= false and n ~= false and e ~= false and pos == #raw + 1 then
        return s, p, t, x, a, b, v, n, e
      end
    end
  end
  return nil
end

-- An ordered version (key.rs): U+0001, 'o', then 20 digits. Lua's string comparison goes
-- through strcoll, which follows the locale Redis takes its collation from, so ordered versions
-- are not compared as strings: each is read as two numbers of 10 digits (exact in a double),
-- compared in turn.
local ORDERED = '^\1o(%d%d%d%d%d%d%d%d%d%d)(%d%d%d%d%d%d%d%d%d%d)$'

-- The two halves of ordered version v, as numbers; nil for an opaque version or none.
local function ordered(v)
  if v and byte(v, 1) == 1 then
    local hi, lo = match(v, ORDERED)
    if hi then
      return tonumber(hi), tonumber(lo)
    end
  end
  return nil
end

-- Whether the ordered version of halves wh, wl is older than v (false if v is not ordered).
local function older(wh, wl, v)
  local h, l = ordered(v)
  return h ~= nil and (wh < h or (wh == h and wl < l))
end

-- Whether an offer of version w is outdated for a record holding version rv and newer version
-- rn: w is ordered and older than either of them that is ordered (ledger/types.rs's
-- is_outdated).
local function outdated(w, rv, rn)
  local wh, wl = ordered(w)
  return wh ~= nil and (older(wh, wl, rv) or older(wh, wl, rn))
end

-- The corrupt reply of a whole call that met, at record key k, what `found` says.
local function unreadable(k, found)
  return corrupt(k, 'a qupid record (`remove` with force deletes what is there)', found)
end

-- The record string of the given fields (t, x, a, b as digit strings or small integers).
local function encode(s, p, t, x, a, b, v, n, e)
  if not (v or n or e) then
    return s .. p .. ' ' .. t .. ' ' .. x .. ' ' .. a .. ' ' .. b .. ' -1 -1 -1|'
  end
  return s .. p .. ' ' .. t .. ' ' .. x .. ' ' .. a .. ' ' .. b .. ' ' .. (v and #v or -1)
      .. ' ' .. (n and #n or -1) .. ' ' .. (e and #e or -1) .. '|' .. (v or '') .. (n or '')
      .. (e or '')
end

-- The flat field list get and list answer for a record: name, value pairs, the optional
-- fields only when set (p only when superseded).
local function fields(s, p, t, x, a, b, v, n, e)
  local f = { 's', s, 't', t, 'x', x, 'a', a, 'b', b }
  if v then
    f[#f + 1] = 'v'
    f[#f + 1] = v
  end
  if n then
    f[#f + 1] = 'n'
    f[#f + 1] = n
  end
  if e then
    f[#f + 1] = 'e'
    f[#f + 1] = e
  end
  if p == '1' then
    f[#f + 1] = 'p'
    f[#f + 1] = '1'
  end
  return f
end

-- What a key that MGET found no string at holds: false if it does not exist, else its type
-- in words.
local function foreign(k)
  local t = typeof(k)
  if t == 'none' then
    return false
  end
  return 'a ' .. t
end

-- Reads one record for a whole call (list, purge): its string, false if there is none, or
-- nil and a corrupt reply.
local function read(k)
  local raw = rpcall('GET', k)
  if type(raw) == 'table' and raw.err then
    if not wrong_type(raw) then
      return nil, raw
    end
    return nil, unreadable(k, foreign(k))
  end
  return raw
end

-- Runs `cmd key` (or `cmd` alone if key is nil) over `args`, at most CHUNK arguments per
-- call (Lua's unpack has a limit); nothing if args is empty. Chunks must be even-sized, so
-- that score-member and key-value pairs are never split.
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

-- The batch's records as they stand in this script (read, then as put() wrote them): a
-- string, or false for none. Batch scripts get ARGV[2] '1' when the caller found no key twice
-- in the batch (UNIQUE, the usual case): records are then kept by position, in VALS, and
-- written once each. Otherwise they are kept by record key, in CACHE, so that an item sees
-- what an earlier item of the batch wrote: a record may then be written, and its member may
-- move between indexes, more than once (NET), and finish() writes only the last.
local UNIQUE = ARGV[2] == '1'
local VALS, CACHE = {}, {}
local NET = false
-- The record keys of the batch that hold another type than a string, and what they hold
-- (foreign's words); ANY_FOREIGN once there is one. Rare: most batches never look it up.
local FOREIGN, ANY_FOREIGN = {}, false
-- Said of an item whose record key holds something that is not a record (item's state).
local BAD = '?'

-- The record of item i (record key k).
local function rec(i, k)
  if UNIQUE then
    return VALS[i]
  end
  return CACHE[k]
end

-- Item i of the batch: its record key, then its record's fields (decode's s, p, t, x, a, b,
-- v, n, e; s false when there is no record); or its record key, BAD and what the key holds
-- instead of a record, in words.
local function item(i)
  local k = KEYS[FIXED + i]
  local f = ANY_FOREIGN and FOREIGN[k]
  if f then
    return k, BAD, f
  end
  local raw = rec(i, k)
  if not raw then
    return k, false
  end
  local s, p, t, x, a, b, v, n, e = decode(raw)
  if not s then
    return k, BAD, NOT_A_RECORD
  end
  return k, s, p, t, x, a, b, v, n, e
end

-- Loads every record of the batch with MGET before anything is written. MGET answers nil
-- for a key of another type as for a missing one, so when some are nil one EXISTS over them
-- tells whether any is there at all (then TYPE finds which, and FOREIGN keeps it).
local function load_batch()
  local n = #KEYS - FIXED
  local absent, na = {}, 0
  local i = 1
  while i <= n do
    local j = min(i + CHUNK - 1, n)
    local vals = call('MGET', unpack(KEYS, FIXED + i, FIXED + j))
    for o = i, j do
      local raw = vals[o - i + 1]
      if not raw then
        raw = false
        na = na + 1
        absent[na] = KEYS[FIXED + o]
      end
      if UNIQUE then
        VALS[o] = raw
      else
        local k = KEYS[FIXED + o]
        if CACHE[k] == nil then
          CACHE[k] = raw
        else
          NET = true
        end
      end
    end
    i = j + 1
  end
  i = 1
  while i <= na do
    local j = min(i + CHUNK - 1, na)
    if call('EXISTS', unpack(absent, i, j)) > 0 then
      for o = i, j do
        local k = absent[o]
        local f = foreign(k)
        if f then
          FOREIGN[k] = f
          ANY_FOREIGN = true
        end
      end
    end
    i = j + 1
  end
  return nil
end

local function prepare()
  return check_fixed() or load_batch()
end

-- Record writes, applied by finish(): with UNIQUE, the records to set (key-value pairs) and
-- to delete; otherwise the keys written, in order (CACHE holds what).
local SETS, NSETS, DELS, DIRTY, NDIRTY = {}, 0, {}, {}, 0

-- Adds the write of record k (the string raw, or false to delete it) to finish()'s.
local function stage(k, raw)
  if raw then
    SETS[NSETS + 1] = k
    SETS[NSETS + 2] = raw
    NSETS = NSETS + 2
  else
    DELS[#DELS + 1] = k
  end
end

-- Writes the record of item i (record key k): the string raw, or false to delete it.
local function put(i, k, raw)
  if UNIQUE then
    stage(k, raw)
  else
    CACHE[k] = raw
    NDIRTY = NDIRTY + 1
    DIRTY[NDIRTY] = k
  end
end

-- Index moves, applied by finish() with one multi-member ZREM or ZADD per index for the
-- whole batch: the members leaving each state's index (REM), entering it (ADD, score-member
-- pairs) and entering a finish-time index (FINS, with the batch's finish time: one per
-- script, its now). When a member may move more than once (its key is repeated in the batch),
-- the moves are first kept in order (MOVED, MFROM, MTO) and finish() nets them, so that only
-- each member's net move is written.
local REM = { q = {}, r = {}, c = {}, d = {} }
local ADD = { q = {}, r = {}, c = {}, d = {} }
local FINS = { c = {}, d = {} }
local MOVED, MFROM, MTO, NMOVED = {}, {}, {}, 0
local AT = nil
-- Members to take out of every index (their record was unreadable, so its state unknown).
local SCRUB = {}

-- Writes down the move of member m from the index of state `from` to that of `to` (either
-- nil: none); `at` is the finish time for a finished `to`. `from` and `to` differ.
local function move(m, from, to)
  if from then
    local l = REM[from]
    l[#l + 1] = m
  end
  if to then
    local l = ADD[to]
    local j = #l
    l[j + 1] = '0'
    l[j + 2] = m
    local f = FINS[to]
    if f then
      j = #f
      f[j + 1] = AT
      f[j + 2] = m
    end
  end
end

-- Moves member m between state indexes; `at` is the finish time for finished states.
local function index(m, from, to, at)
  if at then
    AT = int(at)
  end
  if NET then
    local n = NMOVED + 1
    NMOVED = n
    MOVED[n], MFROM[n], MTO[n] = m, from or false, to or false
  elseif from ~= to then
    move(m, from, to)
  end
end

-- The fencing-token counter, read once by check_fixed and written once by finish(). Answers
-- the new token as a number and as the string records hold.
local TOKEN = nil
-- Shard I of a namespace split into N (its hash tag ends `:I/N`) draws the tokens I + N,
-- I + 2N, ...: distinct across the namespace's shards, and growing within each (so for each
-- key, which is all fencing needs). An unsharded namespace draws 1, 2, 3, ...
local SHARD, SHARDS = string.match(PREFIX, ':(%d+)/(%d+)}:')
SHARD, SHARDS = tonumber(SHARD) or 0, tonumber(SHARDS) or 1
local function new_token()
  local t = (TOKEN or STORED[1] or SHARD) + SHARDS
  TOKEN = t
  return t, format(INT, t)
end

-- Writes what the batch deferred: the records, the index moves and the token counter (and,
-- with the namespace's first token, the layout marker).
local function finish()
  if not UNIQUE then
    local seen = {}
    for i = 1, NDIRTY do
      local k = DIRTY[i]
      if not seen[k] then
        seen[k] = true
        stage(k, CACHE[k])
      end
    end
  end
  bulk('MSET', nil, SETS)
  bulk('DEL', nil, DELS)
  if NET then
    -- Each member's first move takes its last destination; its later moves are dropped.
    local first = {}
    for i = 1, NMOVED do
      local m = MOVED[i]
      local j = first[m]
      if j then
        MTO[j] = MTO[i]
        MOVED[i] = false
      else
        first[m] = i
      end
    end
    for i = 1, NMOVED do
      local m, from, to = MOVED[i], MFROM[i], MTO[i]
      if m and from ~= to then
        move(m, from or nil, to or nil)
      end
    end
  end
  for s, l in pairs(REM) do
    bulk('ZREM', IDX[s], l)
    if FIN[s] then
      bulk('ZREM', FIN[s], l)
    end
  end
  if #SCRUB > 0 then
    for _, s in ipairs({ 'q', 'r', 'c', 'd' }) do
      bulk('ZREM', IDX[s], SCRUB)
    end
    for _, s in ipairs({ 'c', 'd' }) do
      bulk('ZREM', FIN[s], SCRUB)
    end
  end
  for s, l in pairs(ADD) do
    bulk('ZADD', IDX[s], l)
  end
  for s, l in pairs(FINS) do
    bulk('ZADD', FIN[s], l)
  end
  if TOKEN then
    call('SET', KEYS[1], format(INT, TOKEN))
    if not STORED[1] then
      call('SET', KEYS[10], LAYOUT)
    end
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
