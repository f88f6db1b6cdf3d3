//! The statements, one per operation, written for one namespace's schema.
//!
//! Every transition is **one statement over the whole batch** (arrays bound as parameters and
//! `unnest`ed), in the same three steps:
//!
//! 1. `p`: each item joined with its row as the statement's snapshot sees it, and the
//!    decision of the state machine for it (`m`): `0` = nothing to write, another number =
//!    what to write, or why the item is refused.
//! 2. One `INSERT … ON CONFLICT … DO UPDATE`, `UPDATE … FROM p` or `DELETE … USING p` writes
//!    the rows that need it, **guarded by the row's revision** (`rev`, bumped by every write):
//!    a row that another transaction changed after the snapshot is left alone.
//! 3. The answer: one row per item, in input order, saying what was decided and whether it
//!    was written, in named columns that [`wire`](super::wire) reads (with the parameters
//!    it names).
//!
//! An item decided from the snapshot but not written (its row changed in between) is sent
//! again in a fresh statement, with a fresh snapshot; an item with nothing to write is
//! answered from the snapshot. Either way each answer is one the state machine gives for a
//! state the row really had during the call, and every write is made on exactly the row its
//! decision was made on. Decisions never depend on data from another transaction that has
//! not committed.
//!
//! The decisions restate [`decide`](crate::ledger::rules::decide) in SQL; the conformance
//! suite's table of the rules checks them against it. Counts saturate at 65535, the rules'
//! [`MAX_COUNT`](crate::ledger::rules::MAX_COUNT).
//!
//! Times are milliseconds on the namespace's clock, read once per statement (`clk`).
//!
//! A row the ledger cannot read is answered for its key alone and never written (see
//! [`BAD`]); every answer ends with a column `found` saying what such a row holds, NULL for
//! the others.

/// What every transition writes and reads, besides its own columns.
const CLOCK: &str = "clk AS (SELECT coalesce(m.clock_pinned_ms, \
     floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + m.clock_offset_ms) AS now \
     FROM {s}.meta m LIMIT 1)";

/// Each item's row, as the statement's snapshot sees it (all NULL if there is none), found
/// through the key index. The planner may not flatten this subquery (`OFFSET 0`), so it
/// cannot choose to hash the batch against every row of the table instead: it would, for a
/// table of up to some hundred thousand rows whose size it only estimates (autovacuum may not
/// have analysed it yet), and that costs time in proportion to the table on every call.
const ROW: &str =
    "LEFT JOIN LATERAL (SELECT * FROM {s}.records r WHERE r.key = i.key OFFSET 0) r ON true";

/// What makes a row unreadable, in words (`found`), or NULL for a readable row: a negative
/// token, time or count. The schema's `CHECK` keeps the state from 0 to 3 and its types keep
/// every column a number of the right size, so these are the only values a transition reads
/// that can be damaged. Versions and errors are compared and copied as bytes, never decoded,
/// by the transitions (`get` and `list` decode them, and fail naming the key on one that is
/// not valid UTF-8). [`decode::unreadable`](super::decode::unreadable) says the same in Rust.
const BAD: &str = "(CASE WHEN r.token < 0 THEN 'a token of ' || r.token
     WHEN r.at_ms < 0 THEN 'a time of ' || r.at_ms
     WHEN r.attempts < 0 THEN 'an attempt count of ' || r.attempts
     WHEN r.abandoned < 0 THEN 'an abandoned count of ' || r.abandoned END)";

/// Whether the offered version `i.w` is outdated for the row `r` (`{outdated}`): `i.w` is
/// ordered and older than the row's version or its newer version, each counted only if
/// ordered (`ledger::types::is_outdated`). An ordered version is stored as U+0001, `o` and
/// 20 digits, and an opaque one never starts with U+0001, so its first two bytes and its
/// length tell them apart (the prefix is written with `decode`, which no string setting
/// changes). `bytea` compares byte by byte, so two ordered versions compare as their
/// numbers, whatever the database's collation.
const OUTDATED: &str = "(length(i.w) = 22 AND substring(i.w FROM 1 FOR 2) = decode('016f', 'hex')
       AND ((length(r.version) = 22 AND substring(r.version FROM 1 FOR 2) = decode('016f', 'hex')
             AND i.w < r.version)
         OR (length(r.newer) = 22 AND substring(r.newer FROM 1 FOR 2) = decode('016f', 'hex')
             AND i.w < r.newer)))";

/// The statements of one namespace, with its schema name filled in.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) now: String,
    pub(super) offer: String,
    pub(super) offer_and_start: String,
    pub(super) start: String,
    pub(super) renew: String,
    pub(super) complete: String,
    pub(super) fail: String,
    pub(super) release: String,
    pub(super) remove: String,
    pub(super) retry: String,
    pub(super) get: String,
    /// `list` of each state (by its code), from the first key: `$1` limit.
    pub(super) list_first: [String; 4],
    /// `list` of each state (by its code), after a key: `$1` the key, `$2` limit.
    pub(super) list_after: [String; 4],
    pub(super) stats: String,
    pub(super) purge_cut: String,
    pub(super) purge_older: String,
    pub(super) purge_below: String,
}

/// The columns `get` and `list` read, in the order `decode::record` expects.
pub(super) const RECORD_COLUMNS: &str =
    "key, state, token, at_ms, attempts, abandoned, version, newer, last_error, superseded";

impl Sql {
    /// The statements for the schema `schema` (already a quoted identifier).
    pub(super) fn new(schema: &str) -> Sql {
        let fill = |t: &str| {
            t.replace("{clk}", CLOCK)
                .replace("{row}", ROW)
                .replace("{bad}", BAD)
                .replace("{outdated}", OUTDATED)
                .replace("{s}", schema)
        };
        Sql {
            now: fill("WITH {clk} SELECT now FROM clk"),
            offer: fill(&offer(false)),
            offer_and_start: fill(&offer(true)),
            start: fill(&start()),
            renew: fill(&renew()),
            complete: fill(&complete()),
            fail: fill(&fail()),
            release: fill(&release()),
            remove: fill(&remove()),
            retry: fill(&retry()),
            get: fill(&format!(
                "SELECT {RECORD_COLUMNS} FROM {{s}}.records WHERE key = $1"
            )),
            list_first: [0, 1, 2, 3].map(|state| fill(&list(state, false))),
            list_after: [0, 1, 2, 3].map(|state| fill(&list(state, true))),
            stats: fill(STATS),
            purge_cut: fill(PURGE_CUT),
            purge_older: fill(PURGE_OLDER),
            purge_below: fill(PURGE_BELOW),
        }
    }
}

/// `list` of the state with code `state`, from the first key (`$1` limit) or `after` a key
/// (`$1` the key, `$2` limit), in key order, each through an index that holds its keys in
/// that order, so a page costs time in proportion to its length, not to the table:
///
/// - Queued and Running (`state = 0`, `state = 1`): the leased index, `(state, key) WHERE
///   state < 2`;
/// - Dead (`state = 3`): the Dead index, `(key) WHERE state = 3`;
/// - Completed: the primary key, in key order, skipping the rows of other states (few, in
///   the usual ledger). The purge index, `(state, at_ms, key) WHERE state >= 2`, holds the
///   Completed rows too, but in time order: a page read from it must first sort every
///   Completed key after the bound, which the planner chooses when it believes Completed
///   rows are rare (0.5% of the table, its guess for `state = 2` without statistics, before
///   the table is first analysed or when autovacuum is off). So the keys are read in a
///   subquery the filter cannot be pushed into (`OFFSET 0`), which no index but the primary
///   key can order, and the filter is written `state NOT IN (0, 1, 3)`, which the planner
///   guesses to keep most rows, so it walks the primary key instead of sorting the table.
///
/// Each state is a literal, never a parameter: the planner uses a partial index only for a
/// condition it can prove implies the index's (`state = 0` implies `state < 2`). The index's
/// own condition is not repeated: the planner would multiply the two conditions'
/// selectivities (`state = 0` and `state < 2`), guess too few rows, and sort them.
fn list(state: i16, after: bool) -> String {
    let (bound, limit) = if after {
        ("key > $1::bytea", "$2::bigint")
    } else {
        ("true", "$1::bigint")
    };
    if state == 2 {
        format!(
            "SELECT {RECORD_COLUMNS} FROM (\
               SELECT {RECORD_COLUMNS} FROM {{s}}.records WHERE {bound} ORDER BY key OFFSET 0\
             ) r WHERE r.state NOT IN (0, 1, 3) LIMIT {limit}"
        )
    } else {
        format!(
            "SELECT {RECORD_COLUMNS} FROM {{s}}.records WHERE state = {state} AND {bound} \
             ORDER BY key LIMIT {limit}"
        )
    }
}

/// `stats`: the count of each state, each through the partial index that holds that state
/// (the planner may read the table instead for Completed rows, when statistics say they
/// are most of it and that costs less), then the expired leases: the leased rows (through
/// their index) whose expiry the namespace's clock has reached, a cost in proportion to the
/// leased rows. One statement, so one snapshot: the counts agree with each other.
const STATS: &str = "WITH {clk} SELECT
  (SELECT count(*) FROM {s}.records WHERE state = 0),
  (SELECT count(*) FROM {s}.records WHERE state = 1),
  (SELECT count(*) FROM {s}.records WHERE state = 2),
  (SELECT count(*) FROM {s}.records WHERE state = 3),
  (SELECT count(*) FROM {s}.records WHERE state < 2 AND at_ms <= (SELECT now FROM clk))";

/// `$1` keys, `$2` versions (NULL = none), `$3` lease ms, `$4` crash cap (0 = none),
/// `$5` remember newer versions, `$6`/`$7` how long Completed/Dead block, in ms (NULL =
/// forever, 0 = never).
///
/// `m`: 0 duplicate (nothing to write), 1 absent → insert, 2 expired lease → reclaim,
/// 3 finished and not blocking (or abandoned too often but not blocking) → fresh lease,
/// 4 abandoned too often → Dead, 5 leased → remember a newer version, 6 unreadable (nothing
/// to write), 7 outdated (nothing to write: checked before any lease or state rule).
///
/// The `rev` guard makes a conflicting insert of an absent key (`rev` 1 against an existing
/// row's ≥ 1) and a write to a row changed since the snapshot do nothing, so those items are
/// answered "not written" and decided again. Tokens come from the sequence as each row is
/// written, after the rows are sorted by key (so concurrent batches lock rows in one order).
///
/// `{state}` and `{attempts}` are what a new lease (`m` 1 to 3) writes: see [`offer`].
const OFFER: &str = "WITH {clk},
p AS MATERIALIZED (
  SELECT i.ord, i.key, i.w, clk.now, r.rev, r.state, r.token, r.at_ms, r.attempts,
         r.abandoned, r.version, r.last_error, r.superseded, {bad} AS u,
    CASE
      WHEN r.key IS NULL THEN 1
      WHEN {bad} IS NOT NULL THEN 6
      WHEN {outdated} THEN 7
      WHEN r.state < 2 AND clk.now < r.at_ms THEN
        CASE WHEN $5::boolean AND i.w IS NOT NULL AND r.version IS DISTINCT FROM i.w
                  AND r.newer IS DISTINCT FROM i.w THEN 5 ELSE 0 END
      WHEN r.state < 2
           AND NOT ($4::bigint > 0 AND least(r.abandoned + 1, 65535) >= $4::bigint) THEN 2
      WHEN (i.w IS NOT NULL AND r.version IS DISTINCT FROM i.w) OR r.superseded OR NOT (
        CASE WHEN r.state = 2 THEN $6::bigint IS NULL OR greatest(clk.now - r.at_ms, 0) < $6::bigint
             WHEN r.state = 3 THEN $7::bigint IS NULL OR greatest(clk.now - r.at_ms, 0) < $7::bigint
             ELSE $7::bigint IS NULL OR 0 < $7::bigint END) THEN 3
      WHEN r.state < 2 THEN 4
      ELSE 0
    END AS m
  FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS i(key, w, ord)
  CROSS JOIN clk
  {row}
),
w AS (
  INSERT INTO {s}.records AS r
    (key, rev, state, token, at_ms, attempts, abandoned, version, newer, last_error, superseded)
  SELECT p.key, coalesce(p.rev, 0) + 1,
    CASE p.m WHEN 4 THEN 3 WHEN 5 THEN p.state ELSE {state} END,
    CASE WHEN p.m >= 4 THEN p.token ELSE nextval('{s}.tokens') END,
    CASE p.m WHEN 4 THEN p.now WHEN 5 THEN p.at_ms ELSE p.now + $3::bigint END,
    CASE WHEN p.m IN (4, 5) THEN p.attempts ELSE {attempts} END,
    CASE WHEN p.m IN (2, 4) THEN least(p.abandoned + 1, 65535)
         WHEN p.m = 5 THEN p.abandoned ELSE 0 END,
    CASE WHEN p.m >= 4 THEN p.version ELSE p.w END,
    CASE WHEN p.m = 5 THEN p.w END,
    CASE p.m WHEN 2 THEN p.last_error WHEN 4 THEN 'abandoned'::bytea
             WHEN 5 THEN p.last_error END,
    CASE WHEN p.m IN (2, 4, 5) THEN p.superseded ELSE false END
  FROM p WHERE p.m NOT IN (0, 6, 7) ORDER BY p.key
  ON CONFLICT (key) DO UPDATE SET
    rev = excluded.rev, state = excluded.state, token = excluded.token,
    at_ms = excluded.at_ms, attempts = excluded.attempts, abandoned = excluded.abandoned,
    version = excluded.version, newer = excluded.newer, last_error = excluded.last_error,
    superseded = excluded.superseded
  WHERE r.rev = excluded.rev - 1
  RETURNING r.key, r.token, r.at_ms, r.attempts
)
SELECT p.ord, p.m, p.state::integer AS state, w.key IS NOT NULL AS written,
       w.token, w.at_ms AS expires_ms, w.attempts::bigint AS attempts, p.u AS found
FROM p LEFT JOIN w ON w.key = p.key";

/// `offer`, or with `start` offer-and-start: a new lease (`m` 1 to 3) is then written
/// Running with one more attempt (the expired lease's attempts go on counting, as a `start`
/// right after the offer would count them), and the answer's attempts are the attempt just
/// started. Everything else (duplicates, remembered versions, the crash cap) is as `offer`.
fn offer(start: bool) -> String {
    let (state, attempts) = if start {
        (
            "1",
            "least(CASE WHEN p.m = 2 THEN p.attempts ELSE 0 END + 1, 65535)",
        )
    } else {
        ("0", "CASE WHEN p.m = 2 THEN p.attempts ELSE 0 END")
    };
    OFFER
        .replace("{state}", state)
        .replace("{attempts}", attempts)
}

/// The shared start of the claim operations: `$1` keys, `$2` tokens; `m` is 1 when the
/// token is not the key's (or there is no key), 2 when the state does not allow the
/// operation (`{allowed}`), 3 when the row is unreadable (whatever the token: the row's own
/// cannot be trusted), 0 when it does.
const CLAIMS: &str = "WITH {clk},
p AS MATERIALIZED (
  SELECT i.ord, i.key, clk.now, r.rev, r.state, r.attempts, r.version, r.newer, {extra}
    {bad} AS u,
    CASE WHEN r.key IS NULL THEN 1
         WHEN {bad} IS NOT NULL THEN 3
         WHEN r.token <> i.tok THEN 1
         WHEN NOT ({allowed}) THEN 2 ELSE 0 END AS m
  FROM unnest($1::bytea[], $2::bigint[]{arrays}) WITH ORDINALITY AS i(key, tok{names}, ord)
  CROSS JOIN clk
  {row}
),";

fn claims(allowed: &str, extra: &str, arrays: &str, names: &str) -> String {
    CLAIMS
        .replace("{allowed}", allowed)
        .replace("{extra}", extra)
        .replace("{arrays}", arrays)
        .replace("{names}", names)
}

/// `$3` lease ms. Answers the attempt (`attempts`) and the new expiry (`expires_ms`).
fn start() -> String {
    claims("r.state = 0", "", "", "")
        + "
w AS (
  UPDATE {s}.records r SET rev = p.rev + 1, state = 1,
    attempts = least(p.attempts + 1, 65535), at_ms = p.now + $3::bigint
  FROM p WHERE p.m = 0 AND r.key = p.key AND r.rev = p.rev
  RETURNING r.key, r.attempts::bigint AS attempts, r.at_ms AS expires_ms
)
SELECT p.ord, p.m, p.state::integer AS state, w.key IS NOT NULL AS written, w.attempts,
       w.expires_ms, p.u AS found
FROM p LEFT JOIN w ON w.key = p.key"
}

/// `$3` lease ms. Answers the new expiry (`expires_ms`).
fn renew() -> String {
    claims("r.state < 2", "", "", "")
        + "
w AS (
  UPDATE {s}.records r SET rev = p.rev + 1, at_ms = p.now + $3::bigint
  FROM p WHERE p.m = 0 AND r.key = p.key AND r.rev = p.rev
  RETURNING r.key, r.at_ms AS expires_ms
)
SELECT p.ord, p.m, p.state::integer AS state, w.key IS NOT NULL AS written, w.expires_ms,
       p.u AS found
FROM p LEFT JOIN w ON w.key = p.key"
}

/// Answers whether a newer version was remembered (`superseded`).
fn complete() -> String {
    claims("r.state = 1", "", "", "")
        + "
w AS (
  UPDATE {s}.records r SET rev = p.rev + 1, state = 2, at_ms = p.now, newer = NULL,
    superseded = (p.newer IS NOT NULL AND p.version IS DISTINCT FROM p.newer)
  FROM p WHERE p.m = 0 AND r.key = p.key AND r.rev = p.rev
  RETURNING r.key, r.superseded
)
SELECT p.ord, p.m, p.state::integer AS state, w.key IS NOT NULL AS written, w.superseded,
       p.u AS found
FROM p LEFT JOIN w ON w.key = p.key"
}

/// `$3` errors, `$4` lease ms, `$5` max attempts. Answers whether the key went Dead (`dead`)
/// and the attempts (`attempts`).
fn fail() -> String {
    claims("r.state = 1", "i.err,", ", $3::bytea[]", ", err")
        + "
w AS (
  UPDATE {s}.records r SET rev = p.rev + 1, last_error = p.err,
    state = CASE WHEN p.attempts >= $5::bigint THEN 3 ELSE 0 END,
    at_ms = CASE WHEN p.attempts >= $5::bigint THEN p.now ELSE p.now + $4::bigint END,
    newer = CASE WHEN p.attempts >= $5::bigint THEN NULL ELSE p.newer END
  FROM p WHERE p.m = 0 AND r.key = p.key AND r.rev = p.rev
  RETURNING r.key, r.state = 3 AS dead, r.attempts::bigint AS attempts
)
SELECT p.ord, p.m, p.state::integer AS state, w.key IS NOT NULL AS written, w.dead,
       w.attempts, p.u AS found
FROM p LEFT JOIN w ON w.key = p.key"
}

/// Deletes a leased row held under the token.
fn release() -> String {
    claims("r.state < 2", "", "", "")
        + "
w AS (
  DELETE FROM {s}.records r USING p
  WHERE p.m = 0 AND r.key = p.key AND r.rev = p.rev
  RETURNING r.key
)
SELECT p.ord, p.m, p.state::integer AS state, w.key IS NOT NULL AS written, p.u AS found
FROM p LEFT JOIN w ON w.key = p.key"
}

/// The shared shape of `remove` and `retry`: `$1` keys; `m` 1 = no record, 2 = refused
/// (`{refused}`), 3 = unreadable (`{unreadable}` says whether it is deleted instead), 0 =
/// delete. An unreadable row that is not deleted fails the whole call, so then nothing is
/// deleted.
const BY_KEY: &str = "WITH p AS MATERIALIZED (
  SELECT i.ord, i.key, r.rev, r.state, {bad} AS u,
    CASE WHEN r.key IS NULL THEN 1 WHEN {bad} IS NOT NULL THEN {unreadable}
         WHEN {refused} THEN 2 ELSE 0 END AS m
  FROM unnest($1::bytea[]) WITH ORDINALITY AS i(key, ord)
  {row}
),
w AS (
  DELETE FROM {s}.records r USING p
  WHERE p.m = 0 AND r.key = p.key AND r.rev = p.rev
    AND NOT EXISTS (SELECT 1 FROM p WHERE p.m = 3)
  RETURNING r.key
)
SELECT p.ord, p.m, p.state::integer AS state, w.key IS NOT NULL AS written, p.u AS found
FROM p LEFT JOIN w ON w.key = p.key";

/// `$2` force: a leased record is refused unless it is set; an unreadable one is deleted
/// with it, and fails the call without it.
fn remove() -> String {
    BY_KEY
        .replace("{refused}", "r.state < 2 AND NOT $2::boolean")
        .replace("{unreadable}", "CASE WHEN $2::boolean THEN 0 ELSE 3 END")
}

/// Only Dead records are removed; an unreadable one fails the call.
fn retry() -> String {
    BY_KEY
        .replace("{refused}", "r.state <> 3")
        .replace("{unreadable}", "3")
}

/// `$1` state, `$2` how many of the newest to keep (≥ 1): the finish time and key of the
/// oldest record kept, if there are more than that.
const PURGE_CUT: &str = "SELECT at_ms, key FROM {s}.records
WHERE state = $1::smallint AND state >= 2
ORDER BY at_ms DESC, key DESC OFFSET $2::bigint - 1 LIMIT 1";

/// `$1` state, `$2` cutoff, `$3` chunk: deletes up to a chunk of records of the state that
/// finished at or before the cutoff; answers how many.
///
/// The chunk's keys are read first (through the purge index) into an array, and the rows
/// deleted by primary key (`key = ANY(ARRAY(…))`): written as `key IN (SELECT …)`, the
/// planner chose a hash semi-join over a scan of the whole table, about 150 ms a chunk at a
/// million rows, so a large purge took time in proportion to the square of its size.
const PURGE_OLDER: &str = "WITH d AS (
  DELETE FROM {s}.records WHERE key = ANY(ARRAY(
    SELECT key FROM {s}.records
    WHERE state = $1::smallint AND state >= 2 AND at_ms <= $2::bigint
    ORDER BY at_ms, key LIMIT $3::bigint))
  AND state = $1::smallint AND at_ms <= $2::bigint
  RETURNING 1
) SELECT count(*) FROM d";

/// `$1` state, `$2`/`$3` the finish time and key of the oldest record kept, `$4` chunk:
/// deletes up to a chunk of the records of the state older than it; answers how many. By
/// primary key, as [`PURGE_OLDER`].
const PURGE_BELOW: &str = "WITH d AS (
  DELETE FROM {s}.records WHERE key = ANY(ARRAY(
    SELECT key FROM {s}.records
    WHERE state = $1::smallint AND state >= 2 AND (at_ms, key) < ($2::bigint, $3::bytea)
    ORDER BY at_ms, key LIMIT $4::bigint))
  AND state = $1::smallint AND (at_ms, key) < ($2::bigint, $3::bytea)
  RETURNING 1
) SELECT count(*) FROM d";

#[cfg(test)]
mod tests {
    use super::Sql;

    #[test]
    fn every_placeholder_is_filled() {
        let sql = Sql::new("\"qupid_t\"");
        let all = [
            &sql.now,
            &sql.offer,
            &sql.offer_and_start,
            &sql.start,
            &sql.renew,
            &sql.complete,
            &sql.fail,
            &sql.release,
            &sql.remove,
            &sql.retry,
            &sql.get,
            &sql.stats,
            &sql.purge_cut,
            &sql.purge_older,
            &sql.purge_below,
        ];
        let lists = sql.list_first.iter().chain(&sql.list_after);
        for s in all.into_iter().chain(lists) {
            assert!(!s.contains('{') && !s.contains('}'), "{s}");
        }
        assert_ne!(sql.offer, sql.offer_and_start);
    }
}
