//! The state machine on SQLite: the same rules as the memory ledger (its reference
//! implementation), in as few statements as possible. `offer` inserts a new key's row at once
//! and, for a key already there, loads the row, applies the rules line for line and writes it
//! back. `start`, `renew`, `complete` and `release` are each one guarded write (matching the
//! key, the claim's token and the states the transition takes) that changes only the columns
//! it must; the row is read only when the write matched nothing, to tell `LeaseLost` from
//! `WrongState`. `fail` (rare) loads and writes back the row.
//!
//! Every function here runs on the writer thread inside the group's transaction (or on the
//! reader thread, for the reads), so a row cannot change between its read and its write.

use std::time::Duration;

use rusqlite::types::{ToSql, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};

use super::errors::{corrupt, Res};
use super::writer::Ctx;
use crate::clock::Timestamp;
use crate::key::{Key, Offer, Version};
use crate::ledger::types::*;
use crate::policy::{Keep, NewerVersions, Policy, Retention};

const ABANDONED: &str = "abandoned";

/// The memory ledger counts attempts and expiries in 16 bits, saturating; so does this one,
/// so both answer the same at the extremes.
const COUNT_MAX: u32 = u16::MAX as u32;

/// One key's row.
#[derive(Debug, Clone)]
struct Row {
    state: State,
    superseded: bool,
    attempts: u32,
    abandoned: u32,
    token: u64,
    /// Lease expiry while Queued/Running; finish time once Completed/Dead.
    at: u64,
    version: Option<Version>,
    newer: Option<Version>,
    error: Option<String>,
}

impl Row {
    fn fresh(token: u64, lease_until: u64, version: Option<Version>) -> Row {
        Row {
            state: State::Queued,
            superseded: false,
            attempts: 0,
            abandoned: 0,
            token,
            at: lease_until,
            version,
            newer: None,
            error: None,
        }
    }

    fn record(self, key: Key) -> Record {
        Record {
            key,
            state: self.state,
            version: self.version,
            newer_version: self.newer,
            attempts: self.attempts,
            abandoned: self.abandoned,
            token: Token(self.token),
            expires_at: self.state.is_leased().then_some(Timestamp(self.at)),
            finished_at: self.state.is_finished().then_some(Timestamp(self.at)),
            last_error: self.error,
            superseded: self.superseded,
        }
    }
}

/// The columns of a row, in the order [`read_row`] expects: a macro, so that every statement
/// naming them is one `&'static str` (no formatting per call).
macro_rules! columns {
    () => {
        "state, superseded, attempts, abandoned, token, at, version, newer, error"
    };
}

fn state_code(state: State) -> i64 {
    match state {
        State::Queued => 0,
        State::Running => 1,
        State::Completed => 2,
        State::Dead => 3,
    }
}

fn state_of(code: i64) -> Res<State> {
    match code {
        0 => Ok(State::Queued),
        1 => Ok(State::Running),
        2 => Ok(State::Completed),
        3 => Ok(State::Dead),
        n => Err(corrupt(format!("expected a state from 0 to 3, found {n}"))),
    }
}

/// Milliseconds (or a token) as SQLite's signed integer. Times past the year 292 million
/// saturate, which no comparison can tell apart.
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn int(row: &rusqlite::Row<'_>, i: usize, what: &str) -> Res<u64> {
    let n: i64 = row.get(i)?;
    u64::try_from(n).map_err(|_| corrupt(format!("expected a non-negative {what}, found {n}")))
}

/// The bytes of a TEXT or BLOB column, or `None` for NULL.
fn bytes<'r>(row: &'r rusqlite::Row<'_>, i: usize, what: &str) -> Res<Option<&'r [u8]>> {
    match row.get_ref(i)? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(Some(b)),
        other => Err(corrupt(format!(
            "expected the {what} as text, found {:?}",
            other.data_type()
        ))),
    }
}

fn text(row: &rusqlite::Row<'_>, i: usize, what: &str) -> Res<Option<String>> {
    bytes(row, i, what)?
        .map(|b| {
            String::from_utf8(b.to_vec())
                .map_err(|_| corrupt(format!("expected the {what} as UTF-8, found other bytes")))
        })
        .transpose()
}

fn version(row: &rusqlite::Row<'_>, i: usize, what: &str) -> Res<Option<Version>> {
    text(row, i, what)?
        .map(|v| Version::new(v).map_err(|e| corrupt(format!("{what}: {e}"))))
        .transpose()
}

/// Reads a row whose `columns!()` start at column `base`.
fn read_row(row: &rusqlite::Row<'_>, base: usize) -> Res<Row> {
    let count = |i: usize, what: &str| -> Res<u32> {
        let n = int(row, base + i, what)?;
        u32::try_from(n).map_err(|_| corrupt(format!("expected {what} below 2^32, found {n}")))
    };
    Ok(Row {
        state: state_of(row.get(base)?)?,
        superseded: row.get::<_, i64>(base + 1)? != 0,
        attempts: count(2, "attempt count")?,
        abandoned: count(3, "abandoned count")?,
        token: int(row, base + 4, "token")?,
        at: int(row, base + 5, "time")?,
        version: version(row, base + 6, "version")?,
        newer: version(row, base + 7, "newer version")?,
        error: text(row, base + 8, "error")?,
    })
}

fn load(conn: &Connection, key: &str) -> Res<Option<Row>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        " FROM qupid_entries WHERE key = ?1"
    ))?;
    let mut rows = stmt.query([key.as_bytes()])?;
    match rows.next()? {
        Some(row) => read_row(row, 0).map(Some),
        None => Ok(None),
    }
}

fn store(conn: &Connection, key: &str, r: &Row) -> Res<()> {
    let mut stmt = conn.prepare_cached(concat!(
        "INSERT INTO qupid_entries (key, ",
        columns!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (key) DO UPDATE SET state = excluded.state,
           superseded = excluded.superseded, attempts = excluded.attempts,
           abandoned = excluded.abandoned, token = excluded.token, at = excluded.at,
           version = excluded.version, newer = excluded.newer, error = excluded.error"
    ))?;
    stmt.execute(params![
        key.as_bytes(),
        state_code(r.state),
        i64::from(r.superseded),
        i64::from(r.attempts),
        i64::from(r.abandoned),
        sql_int(r.token),
        sql_int(r.at),
        r.version.as_ref().map(|v| v.as_str().as_bytes()),
        r.newer.as_ref().map(|v| v.as_str().as_bytes()),
        r.error.as_deref(),
    ])?;
    Ok(())
}

fn delete(conn: &Connection, key: &str) -> Res<()> {
    conn.prepare_cached("DELETE FROM qupid_entries WHERE key = ?1")?
        .execute([key.as_bytes()])?;
    Ok(())
}

fn accepted(token: u64, at: u64, attempts: u32) -> Offered {
    Offered::Accepted(Lease {
        token: Token(token),
        expires_at: Timestamp(at),
        attempts,
    })
}

/// The ledger's `offer`, or with `start` its `offer_and_start`: accepted keys are then
/// Running, their attempt counted, instead of Queued.
pub(super) fn offer(
    cx: &mut Ctx<'_>,
    policy: &Policy,
    offers: &[Offer],
    start: bool,
) -> Res<Vec<Offered>> {
    let now = cx.now().0;
    offers
        .iter()
        .map(|o| offer_one(cx, policy, o, now, start))
        .collect()
}

/// Inserts a fresh row for `key` unless it has one: whether it did. The row is Queued with no
/// attempts, or with `start` Running its first attempt (state code 1, one attempt).
fn insert_fresh(
    conn: &Connection,
    key: &str,
    token: u64,
    lease_until: u64,
    version: Option<&Version>,
    start: bool,
) -> Res<bool> {
    let n = conn
        .prepare_cached(concat!(
            "INSERT INTO qupid_entries (key, ",
            columns!(),
            ")
             VALUES (?1, ?5, 0, ?5, 0, ?2, ?3, ?4, NULL, NULL) ON CONFLICT (key) DO NOTHING"
        ))?
        .execute(params![
            key.as_bytes(),
            sql_int(token),
            sql_int(lease_until),
            version.map(|v| v.as_str().as_bytes()),
            i64::from(start),
        ])?;
    Ok(n > 0)
}

fn offer_one(
    cx: &mut Ctx<'_>,
    policy: &Policy,
    offer: &Offer,
    now: u64,
    start: bool,
) -> Res<Offered> {
    let lease_until = Timestamp(now).plus(policy.lease).0;
    let key = offer.key.as_str();
    // Most offers are of new keys: insert first, and read the row only when it is there.
    let token = cx.peek_token()?;
    let v = offer.version.as_ref();
    if insert_fresh(cx.conn, key, token, lease_until, v, start)? {
        cx.take_token(token);
        return Ok(accepted(token, lease_until, u32::from(start)));
    }
    let Some(mut row) = load(cx.conn, key)? else {
        return Err(corrupt(format!(
            "key {key:?} conflicts on insert but cannot be read"
        )));
    };
    let mut state = row.state;
    let mut changed_row = false;
    if state.is_leased() {
        if now < row.at {
            if policy.newer_versions == NewerVersions::Remember {
                if let Some(w) = &offer.version {
                    if row.version.as_ref() != Some(w) && row.newer.as_ref() != Some(w) {
                        row.newer = Some(w.clone());
                        store(cx.conn, key, &row)?;
                    }
                }
            }
            return Ok(Offered::Duplicate(state));
        }
        // The holder's lease expired without an ending: it is abandoned.
        row.abandoned = (row.abandoned + 1).min(COUNT_MAX);
        if policy.crash_cap > 0 && row.abandoned >= policy.crash_cap {
            row.at = now;
            row.error = Some(ABANDONED.to_owned());
            row.newer = None;
            row.state = State::Dead;
            state = State::Dead;
            changed_row = true;
            // Falls through to the finished-key rules below.
        } else {
            let token = cx.next_token()?;
            row.token = token;
            row.at = lease_until;
            row.version = offer.version.clone();
            row.newer = None;
            row.state = State::Queued;
            if start {
                row.state = State::Running;
                row.attempts = (row.attempts + 1).min(COUNT_MAX);
            }
            store(cx.conn, key, &row)?;
            return Ok(accepted(token, lease_until, row.attempts));
        }
    }
    // Completed or Dead.
    let changed = match &offer.version {
        Some(w) => row.version.as_ref() != Some(w),
        None => false,
    };
    let blocks = policy
        .blocking(state)
        .blocks(Timestamp(row.at), Timestamp(now));
    if !changed && !row.superseded && blocks {
        if changed_row {
            store(cx.conn, key, &row)?;
        }
        return Ok(Offered::Duplicate(state));
    }
    let token = cx.next_token()?;
    let mut row = Row::fresh(token, lease_until, offer.version.clone());
    if start {
        row.state = State::Running;
        row.attempts = 1;
    }
    store(cx.conn, key, &row)?;
    Ok(accepted(token, lease_until, row.attempts))
}

/// Applies `f` to the row held under each claim; a claim whose token is not the key's current
/// one is refused with `LeaseLost`. `f` answers the outcome, having changed the row.
fn each_held<C, T>(
    cx: &mut Ctx<'_>,
    items: &[C],
    claim: impl Fn(&C) -> &Claim,
    mut f: impl FnMut(&mut Row, &C) -> Result<T, Refused>,
) -> Res<Vec<Result<T, Refused>>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let c = claim(item);
        let key = c.key.as_str();
        let outcome = match load(cx.conn, key)? {
            Some(mut row) if row.token == c.token.0 => match f(&mut row, item) {
                Ok(value) => {
                    store(cx.conn, key, &row)?;
                    Ok(value)
                }
                Err(refused) => Err(refused),
            },
            _ => Err(Refused::LeaseLost),
        };
        out.push(outcome);
    }
    Ok(out)
}

/// Why a guarded write under `claim` matched no row: the key is gone or its token is not the
/// claim's (`LeaseLost`), or it is in a state the transition does not take (`WrongState`).
fn refusal(conn: &Connection, claim: &Claim) -> Res<Refused> {
    let found: Option<(i64, i64)> = conn
        .prepare_cached("SELECT state, token FROM qupid_entries WHERE key = ?1")?
        .query_row([claim.key.as_str().as_bytes()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    match found {
        Some((state, token)) if u64::try_from(token).ok() == Some(claim.token.0) => {
            Ok(Refused::WrongState(state_of(state)?))
        }
        _ => Ok(Refused::LeaseLost),
    }
}

/// Runs the guarded write `sql` (parameters: key, token, then `extra` if it takes a third)
/// for each claim: the write matches only the key's row under the claim's token and in a
/// state it takes, so one statement both checks and writes. For a claim it matched, `answer`
/// says the outcome (reading the row again if need be); a claim it did not match is refused,
/// after reading why.
///
/// `common`, if given, is tried first: a narrower write (same parameters) for the common case,
/// whose outcome is known without reading the row again (a first start is attempt 1; a key
/// with no newer version offered completes not superseded). Only a claim it does not match
/// goes on to `sql`.
///
/// The writes have no `RETURNING` clause: SQLite runs one as a trigger filling a temporary
/// table, with a statement journal, which costs more than reading the row again.
fn guarded<T: Clone>(
    cx: &mut Ctx<'_>,
    claims: &[Claim],
    common: Option<(&str, T)>,
    sql: &str,
    extra: i64,
    mut answer: impl FnMut(&Connection, &[u8]) -> Res<T>,
) -> Res<Vec<Result<T, Refused>>> {
    let conn = cx.conn;
    let mut common = match common {
        Some((sql, value)) => Some((conn.prepare_cached(sql)?, value)),
        None => None,
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let arity = stmt.parameter_count().min(3);
    let mut out = Vec::with_capacity(claims.len());
    for c in claims {
        let (key, token) = (c.key.as_str().as_bytes(), sql_int(c.token.0));
        let all: [&dyn ToSql; 3] = [&key, &token, &extra];
        if let Some((narrow, value)) = &mut common {
            let n = narrow.parameter_count().min(3);
            if narrow.execute(&all[..n])? > 0 {
                out.push(Ok(value.clone()));
                continue;
            }
        }
        out.push(if stmt.execute(&all[..arity])? > 0 {
            Ok(answer(conn, key)?)
        } else {
            Err(refusal(conn, c)?)
        });
    }
    Ok(out)
}

/// One integer column of the row of `key`, which is there.
fn column(conn: &Connection, sql: &str, key: &[u8], what: &str) -> Res<u64> {
    let n: i64 = conn.prepare_cached(sql)?.query_row([key], |r| r.get(0))?;
    u64::try_from(n).map_err(|_| corrupt(format!("expected a non-negative {what}, found {n}")))
}

/// The ledger's `start`.
pub(super) fn start(
    cx: &mut Ctx<'_>,
    policy: &Policy,
    claims: &[Claim],
) -> Res<Vec<Result<Started, Refused>>> {
    let until = cx.now().plus(policy.lease).0;
    let first = Started {
        attempt: 1,
        expires_at: Timestamp(until),
    };
    guarded(
        cx,
        claims,
        Some((
            "UPDATE qupid_entries SET state = 1, attempts = 1, at = ?3
             WHERE key = ?1 AND token = ?2 AND state = 0 AND attempts = 0",
            first,
        )),
        "UPDATE qupid_entries SET state = 1, attempts = min(attempts + 1, 65535), at = ?3
         WHERE key = ?1 AND token = ?2 AND state = 0",
        sql_int(until),
        |conn, key| {
            let sql = "SELECT attempts FROM qupid_entries WHERE key = ?1";
            let n = column(conn, sql, key, "attempt count")?;
            let attempt = u32::try_from(n)
                .map_err(|_| corrupt(format!("expected attempts below 2^32, found {n}")))?;
            Ok(Started {
                attempt,
                expires_at: Timestamp(until),
            })
        },
    )
}

/// The ledger's `renew`.
pub(super) fn renew(
    cx: &mut Ctx<'_>,
    policy: &Policy,
    claims: &[Claim],
) -> Res<Vec<Result<Timestamp, Refused>>> {
    let until = cx.now().plus(policy.lease).0;
    guarded(
        cx,
        claims,
        None,
        "UPDATE qupid_entries SET at = ?3 WHERE key = ?1 AND token = ?2 AND state IN (0, 1)",
        sql_int(until),
        |_, _| Ok(Timestamp(until)),
    )
}

/// The ledger's `complete`: the key is superseded if a newer version than the one processed
/// was offered meanwhile.
pub(super) fn complete(cx: &mut Ctx<'_>, claims: &[Claim]) -> Res<Vec<Result<Done, Refused>>> {
    let now = cx.now().0;
    guarded(
        cx,
        claims,
        Some((
            "UPDATE qupid_entries SET superseded = 0, at = ?3, state = 2
             WHERE key = ?1 AND token = ?2 AND state = 1 AND newer IS NULL",
            Done { superseded: false },
        )),
        "UPDATE qupid_entries SET
           superseded = (newer IS NOT NULL AND CAST(newer AS BLOB) IS NOT CAST(version AS BLOB)),
           newer = NULL, at = ?3, state = 2
         WHERE key = ?1 AND token = ?2 AND state = 1",
        sql_int(now),
        |conn, key| {
            let sql = "SELECT superseded FROM qupid_entries WHERE key = ?1";
            Ok(Done {
                superseded: column(conn, sql, key, "superseded flag")? != 0,
            })
        },
    )
}

/// The ledger's `fail`.
pub(super) fn fail(
    cx: &mut Ctx<'_>,
    policy: &Policy,
    failures: &[Failure],
) -> Res<Vec<Result<Failed, Refused>>> {
    let now = cx.now();
    each_held(
        cx,
        failures,
        |f| &f.claim,
        |row, f| {
            if row.state != State::Running {
                return Err(Refused::WrongState(row.state));
            }
            row.error = Some(f.error.clone());
            let attempts = row.attempts;
            let out = if attempts >= policy.max_attempts.min(COUNT_MAX) {
                row.at = now.0;
                row.newer = None;
                row.state = State::Dead;
                Failed::Dead { attempts }
            } else {
                row.at = now.plus(policy.lease).0;
                row.state = State::Queued;
                Failed::Retry { attempts }
            };
            Ok(out)
        },
    )
}

/// The ledger's `release`.
pub(super) fn release(cx: &mut Ctx<'_>, claims: &[Claim]) -> Res<Vec<Result<(), Refused>>> {
    guarded(
        cx,
        claims,
        None,
        "DELETE FROM qupid_entries WHERE key = ?1 AND token = ?2 AND state IN (0, 1)",
        0,
        |_, _| Ok(()),
    )
}

fn state_of_key(conn: &Connection, key: &Key) -> Res<Option<State>> {
    let code: Option<i64> = conn
        .prepare_cached("SELECT state FROM qupid_entries WHERE key = ?1")?
        .query_row([key.as_str().as_bytes()], |r| r.get(0))
        .optional()?;
    code.map(state_of).transpose()
}

/// The ledger's `remove`.
pub(super) fn remove(cx: &mut Ctx<'_>, keys: &[Key], force: bool) -> Res<Vec<Removed>> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let outcome = match state_of_key(cx.conn, k)? {
            None => Removed::NotFound,
            Some(st) if st.is_leased() && !force => Removed::Leased(st),
            Some(_) => {
                delete(cx.conn, k.as_str())?;
                Removed::Removed
            }
        };
        out.push(outcome);
    }
    Ok(out)
}

/// The ledger's `retry`.
pub(super) fn retry(cx: &mut Ctx<'_>, keys: &[Key]) -> Res<Vec<Retried>> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let outcome = match state_of_key(cx.conn, k)? {
            None => Retried::NotFound,
            Some(State::Dead) => {
                delete(cx.conn, k.as_str())?;
                Retried::Retried
            }
            Some(st) => Retried::NotDead(st),
        };
        out.push(outcome);
    }
    Ok(out)
}

/// The ledger's `purge`: by age, then by count, for each finished state whose rule is not
/// "forever".
pub(super) fn purge(cx: &mut Ctx<'_>, retention: &Retention) -> Res<Purged> {
    let now = cx.now().0;
    let mut purged = Purged::default();
    for (state, keep, n) in [
        (State::Completed, retention.completed, &mut purged.completed),
        (State::Dead, retention.dead, &mut purged.dead),
    ] {
        if !keep.is_forever() {
            *n = purge_state(cx.conn, state, keep, now)?;
        }
    }
    Ok(purged)
}

/// Every statement says `state >= 2`, the condition of the purge index, so SQLite may use it.
fn purge_state(conn: &Connection, state: State, keep: Keep, now: u64) -> Res<u64> {
    let code = state_code(state);
    let mut removed = 0;
    if let Some(age) = keep.max_age {
        // The memory ledger purges when `now.since(at) >= age`, with `since` in whole
        // milliseconds, saturating at zero: that is `at <= now - ceil_ms(age)`, or every
        // record when the age is zero.
        let age_ms = ceil_millis(age);
        let n = if age_ms == 0 {
            conn.prepare_cached("DELETE FROM qupid_entries WHERE state = ?1 AND state >= 2")?
                .execute([code])?
        } else if let Some(before) = now.checked_sub(age_ms) {
            conn.prepare_cached(
                "DELETE FROM qupid_entries WHERE state = ?1 AND state >= 2 AND at <= ?2",
            )?
            .execute([code, sql_int(before)])?
        } else {
            0
        };
        removed += n as u64;
    }
    if let Some(max) = keep.max_count {
        // Newest first; ties broken by key, as in every ledger.
        let n = conn
            .prepare_cached(
                "DELETE FROM qupid_entries WHERE state = ?1 AND key IN (
                   SELECT key FROM qupid_entries WHERE state = ?1 AND state >= 2
                   ORDER BY at DESC, key DESC LIMIT -1 OFFSET ?2)",
            )?
            .execute([code, sql_int(max)])?;
        removed += n as u64;
    }
    Ok(removed)
}

fn ceil_millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The ledger's `get`.
pub(super) fn get(conn: &Connection, key: Key) -> Res<Option<Record>> {
    Ok(load(conn, key.as_str())?.map(|row| row.record(key)))
}

/// The ledger's `list`. Each statement repeats the condition of the partial index it is
/// meant to use (leased, Dead), so SQLite may use it; Completed rows, the bulk of a ledger,
/// are read in key order from the table itself.
pub(super) fn list(conn: &Connection, query: &ListQuery) -> Res<Page> {
    let limit = query.limit.max(1);
    let fetch = sql_int((limit as u64).saturating_add(1));
    let code = state_code(query.state);
    // Without a cursor the bound is the empty key, below every key.
    let after = query
        .after
        .as_ref()
        .map_or(&b""[..], |k| k.as_str().as_bytes());
    let mut stmt = conn.prepare_cached(&list_sql(query.state))?;
    let mut rows = stmt.query(params![code, after, fetch])?;
    let mut records = Vec::new();
    while let Some(row) = rows.next()? {
        let key = text(row, 0, "key")?.ok_or_else(|| corrupt("expected a key, found NULL"))?;
        let key = Key::new(key).map_err(|e| corrupt(format!("key: {e}")))?;
        records.push(read_row(row, 1)?.record(key));
    }
    let next = if records.len() > limit {
        records.truncate(limit);
        records.last().map(|r| r.key.clone())
    } else {
        None
    };
    Ok(Page { records, next })
}

/// The statement of `list` for `state`: parameters state code, key bound, limit.
pub(super) fn list_sql(state: State) -> String {
    let (table, filter) = match state {
        State::Queued | State::Running => ("qupid_entries", "state = ?1 AND state < 2"),
        State::Completed => ("qupid_entries NOT INDEXED", "state = ?1"),
        // `state = 3` is the Dead index's own condition, written as a literal so SQLite can
        // prove the index applies; `?1` is still bound (to 3), as for the other states.
        State::Dead => ("qupid_entries", "state = 3 AND ?1 = 3"),
    };
    format!(
        "SELECT key, {} FROM {table} WHERE {filter} AND key > ?2 ORDER BY key LIMIT ?3",
        columns!()
    )
}

/// The statement of `stats`: each count reads the partial index of its state, not the table.
pub(super) const STATS_SQL: &str =
    "SELECT (SELECT count(*) FROM qupid_entries WHERE state = 0 AND state < 2),
            (SELECT count(*) FROM qupid_entries WHERE state = 1 AND state < 2),
            (SELECT count(*) FROM qupid_entries WHERE state = 2 AND state >= 2),
            (SELECT count(*) FROM qupid_entries WHERE state = 3)";

/// The ledger's `stats`: one statement, so one consistent snapshot.
pub(super) fn stats(conn: &Connection) -> Res<Stats> {
    let mut stmt = conn.prepare_cached(STATS_SQL)?;
    let mut rows = stmt.query([])?;
    let row = rows
        .next()?
        .ok_or_else(|| corrupt("expected a row of counts, found none"))?;
    Ok(Stats {
        queued: int(row, 0, "count")?,
        running: int(row, 1, "count")?,
        completed: int(row, 2, "count")?,
        dead: int(row, 3, "count")?,
    })
}
