//! The state machine on SQLite: the rules of [`decide`](crate::ledger::rules::decide),
//! applied in as few statements as possible. `offer` inserts the row the rules make of an
//! absent key at once and, for a key already there, loads the row, decides and writes back
//! what the rules say. `fail`, `remove`, `retry` and a start that is not the first do the
//! same. A first `start`, `renew`, `complete` and `release` are each one guarded write
//! (matching the key, the claim's token and the states the rules let the transition take)
//! that changes only the columns the rules change; the row is read only when the write
//! matched nothing, and the rules say why (`LeaseLost`, `WrongState`). The conformance
//! suite's table of the rules checks those writes against [`decide`].
//!
//! Every function here runs on the writer thread inside the group's transaction (or on the
//! reader thread, for the reads), so a row cannot change between its read and its write.
//!
//! A row that does not decode (a state code outside 0 to 3, a negative token, a version that
//! is not valid UTF-8, …: a file edited by hand or by another program) is answered for its key
//! alone, as [`Unreadable`], and left untouched: `offer` and `fail` read the whole row before
//! they write it, and the guarded writes of `start`, `renew`, `complete` and `release` match
//! only a row whose state and token are the claim's, so a row with a damaged state or token
//! is never written; when they match nothing, the row is read whole to say why. A row damaged
//! only in a column such a guarded write neither guards on nor writes (its version, its
//! error) is still moved by it: the claim's token and state are intact, and the damage is
//! answered by the next `offer` of the key.

use std::time::Duration;

use rusqlite::types::{ToSql, Value, ValueRef};
use rusqlite::{params, Connection};

use super::errors::{corrupt, of_key, unreadable, Fault, Res};
use super::writer::Ctx;
use crate::clock::Timestamp;
use crate::key::{Key, Offer, Version};
use crate::ledger::rules::{decide, Answer, Event, Facts, Write};
use crate::ledger::types::*;
use crate::policy::Policy;

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
    /// The row as the rules see it.
    fn facts(&self) -> Facts<'_> {
        Facts {
            state: self.state,
            superseded: self.superseded,
            attempts: self.attempts,
            abandoned: self.abandoned,
            token: Token(self.token),
            at: Timestamp(self.at),
            version: self.version.as_ref(),
            newer: self.newer.as_ref(),
            error: self.error.as_deref(),
        }
    }

    /// The row holding `record` under `token`.
    fn of(record: &Facts<'_>, token: u64) -> Row {
        Row {
            state: record.state,
            superseded: record.superseded,
            attempts: record.attempts,
            abandoned: record.abandoned,
            token,
            at: record.at.0,
            version: record.version.cloned(),
            newer: record.newer.cloned(),
            error: record.error.map(str::to_owned),
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
        n => Err(unreadable(format!("state code {n}"))),
    }
}

/// Milliseconds (or a token) as SQLite's signed integer. Times past the year 292 million
/// saturate, which no comparison can tell apart.
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// How a value that should not be there is stored, in words.
fn stored_as(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}

/// An integer column of a row; `what` names it with its article ("a token").
fn integer(row: &rusqlite::Row<'_>, i: usize, what: &str) -> Res<i64> {
    match row.get_ref(i)? {
        ValueRef::Integer(n) => Ok(n),
        other => Err(unreadable(format!("{what} stored as {}", stored_as(other)))),
    }
}

/// A non-negative integer column of a row.
fn int(row: &rusqlite::Row<'_>, i: usize, what: &str) -> Res<u64> {
    let n = integer(row, i, what)?;
    u64::try_from(n).map_err(|_| unreadable(format!("{what} of {n}")))
}

/// The bytes of a TEXT or BLOB column, or `None` for NULL.
fn bytes<'r>(row: &'r rusqlite::Row<'_>, i: usize, what: &str) -> Res<Option<&'r [u8]>> {
    match row.get_ref(i)? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(Some(b)),
        other => Err(unreadable(format!("{what} stored as {}", stored_as(other)))),
    }
}

fn text(row: &rusqlite::Row<'_>, i: usize, what: &str) -> Res<Option<String>> {
    bytes(row, i, what)?
        .map(|b| {
            String::from_utf8(b.to_vec())
                .map_err(|_| unreadable(format!("{what} that is not valid UTF-8")))
        })
        .transpose()
}

fn version(row: &rusqlite::Row<'_>, i: usize, what: &str) -> Res<Option<Version>> {
    text(row, i, what)?
        .map(|v| Version::new(v).map_err(|e| unreadable(format!("{what} that is not valid ({e})"))))
        .transpose()
}

/// Reads a row whose `columns!()` start at column `base`.
fn read_row(row: &rusqlite::Row<'_>, base: usize) -> Res<Row> {
    let count = |i: usize, what: &str| -> Res<u32> {
        let n = int(row, base + i, what)?;
        u32::try_from(n).map_err(|_| unreadable(format!("{what} of {n}, past 2^32")))
    };
    Ok(Row {
        state: state_of(integer(row, base, "a state")?)?,
        superseded: integer(row, base + 1, "a superseded flag")? != 0,
        attempts: count(2, "an attempt count")?,
        abandoned: count(3, "an abandoned count")?,
        token: int(row, base + 4, "a token")?,
        at: int(row, base + 5, "a time")?,
        version: version(row, base + 6, "a version")?,
        newer: version(row, base + 7, "a newer version")?,
        error: text(row, base + 8, "an error")?,
    })
}

/// The row of `key`, if it has one; [`Fault::Unreadable`] if it does not decode.
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

/// The ledger's `offer`, or with `start` its `offer_and_start`: accepted keys are then
/// Running, their attempt counted, instead of Queued.
pub(super) fn offer(
    cx: &mut Ctx<'_>,
    policy: &Policy,
    offers: &[Offer],
    start: bool,
) -> Res<Vec<Offered>> {
    let now = cx.now();
    offers
        .iter()
        .map(|o| offer_one(cx, policy, o, now, start))
        .collect()
}

/// Inserts the row of `record` under `token` for `key` unless the key has one: whether it
/// did.
fn insert_fresh(conn: &Connection, key: &str, token: u64, record: &Facts<'_>) -> Res<bool> {
    let n = conn
        .prepare_cached(concat!(
            "INSERT INTO qupid_entries (key, ",
            columns!(),
            ")
             VALUES (?1, ?2, 0, ?3, 0, ?4, ?5, ?6, NULL, NULL) ON CONFLICT (key) DO NOTHING"
        ))?
        .execute(params![
            key.as_bytes(),
            state_code(record.state),
            i64::from(record.attempts),
            sql_int(token),
            sql_int(record.at.0),
            record.version.map(|v| v.as_str().as_bytes()),
        ])?;
    Ok(n > 0)
}

fn offer_one(
    cx: &mut Ctx<'_>,
    policy: &Policy,
    offer: &Offer,
    now: Timestamp,
    start: bool,
) -> Res<Offered> {
    let key = offer.key.as_str();
    let event = Event::Offer {
        version: offer.version.as_ref(),
        start,
    };
    // Most offers are of new keys: insert what the rules make of an absent key, and read
    // the row only when it is there.
    let fresh = decide(None, &event, policy, now);
    if let Write::Put { record, .. } = &fresh.write {
        let token = cx.peek_token()?;
        if insert_fresh(cx.conn, key, token, record)? {
            cx.take_token(token);
            return Ok(fresh.answer.into_offered(Token(token)));
        }
    }
    let row = match load(cx.conn, key) {
        Ok(Some(row)) => row,
        Ok(None) => {
            return Err(corrupt(format!(
                "key {key:?} conflicts on insert but cannot be read"
            )))
        }
        // Nothing was written: the insert above found the row and did nothing.
        Err(Fault::Unreadable(u)) => return Ok(Offered::Unreadable(u)),
        Err(e) => return Err(e),
    };
    let d = decide(Some(&row.facts()), &event, policy, now);
    let token = write(cx, key, d.write, row.token)?;
    Ok(d.answer.into_offered(Token(token)))
}

/// Writes what the rules decided for `key`, whose token is `token`: the token the key has
/// afterwards (a new one if the rules asked for it).
fn write(cx: &mut Ctx<'_>, key: &str, write: Write<'_>, token: u64) -> Res<u64> {
    match write {
        Write::Keep => Ok(token),
        Write::Delete => delete(cx.conn, key).map(|()| token),
        Write::Put { record, new_token } => {
            let token = if new_token { cx.next_token()? } else { token };
            store(cx.conn, key, &Row::of(&record, token))?;
            Ok(token)
        }
    }
}

/// Applies `event` to the row held under `claim`, by the rules: a claim whose token is not
/// the key's current one is refused with `LeaseLost`, an unreadable row with `Unreadable`
/// (and not written).
fn held(
    cx: &mut Ctx<'_>,
    claim: &Claim,
    event: &Event<'_>,
    policy: &Policy,
    now: Timestamp,
) -> Res<Answer> {
    let key = claim.key.as_str();
    let row = match load(cx.conn, key) {
        Ok(row) => row,
        Err(Fault::Unreadable(u)) => return Ok(Answer::Refused(Refused::Unreadable(u))),
        Err(e) => return Err(e),
    };
    let d = decide(row.as_ref().map(Row::facts).as_ref(), event, policy, now);
    let token = row.as_ref().map_or(0, |r| r.token);
    write(cx, key, d.write, token)?;
    Ok(d.answer)
}

/// Why a guarded write of `event` under `claim` matched no row, by the rules: the key is
/// gone or its token is not the claim's (`LeaseLost`), it is in a state the transition does
/// not take (`WrongState`), or its row does not decode (`Unreadable`).
fn refusal(conn: &Connection, claim: &Claim, event: &Event<'_>) -> Res<Refused> {
    let row = match load(conn, claim.key.as_str()) {
        Ok(row) => row,
        Err(Fault::Unreadable(u)) => return Ok(Refused::Unreadable(u)),
        Err(e) => return Err(e),
    };
    let facts = row.as_ref().map(Row::facts);
    // The refusals do not depend on the policy or the time.
    match decide(facts.as_ref(), event, &Policy::default(), Timestamp(0)).answer {
        Answer::Refused(refused) => Ok(refused),
        other => Err(corrupt(format!(
            "key {:?}: a guarded write matched nothing where the rules answer {other:?}",
            claim.key.as_str()
        ))),
    }
}

/// Runs the guarded write `sql` (parameters: key, token, then `extra` if it takes a third)
/// for each claim: the write matches only the key's row under the claim's token and in a
/// state it takes, so one statement both checks and writes. For a claim it matched, `answer`
/// says the outcome (reading the row again if need be); a claim it did not match is refused,
/// after reading why (by the rules, for `event` of the claim's token).
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
    event: impl Fn(Token) -> Event<'static>,
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
            Err(refusal(conn, c, &event(c.token))?)
        });
    }
    Ok(out)
}

/// One integer column of the row of `key`, which is there and was just written.
fn column(conn: &Connection, sql: &str, key: &[u8], what: &str) -> Res<u64> {
    let n: i64 = conn.prepare_cached(sql)?.query_row([key], |r| r.get(0))?;
    u64::try_from(n).map_err(|_| corrupt(format!("expected a non-negative {what}, found {n}")))
}

/// The ledger's `start`. A first start (no attempt made yet) is one narrow guarded write
/// whose answer needs no read; any other start reads the row whole, so that an attempt count
/// that does not decode is answered for its key instead of being written on.
pub(super) fn start(
    cx: &mut Ctx<'_>,
    policy: &Policy,
    claims: &[Claim],
) -> Res<Vec<Result<Started, Refused>>> {
    let now = cx.now();
    let until = now.plus(policy.lease).0;
    let mut first = cx.conn.prepare_cached(
        "UPDATE qupid_entries SET state = 1, attempts = 1, at = ?3
         WHERE key = ?1 AND token = ?2 AND state = 0 AND attempts = 0",
    )?;
    let mut out = Vec::with_capacity(claims.len());
    for c in claims {
        let key = c.key.as_str().as_bytes();
        if first.execute(params![key, sql_int(c.token.0), sql_int(until)])? > 0 {
            out.push(Ok(Started {
                attempt: 1,
                expires_at: Timestamp(until),
            }));
            continue;
        }
        let event = Event::Start { token: c.token };
        out.push(held(cx, c, &event, policy, now)?.into_started());
    }
    Ok(out)
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
        |token| Event::Renew { token },
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
        |token| Event::Complete { token },
        |conn, key| {
            let sql = "SELECT superseded FROM qupid_entries WHERE key = ?1";
            Ok(Done {
                superseded: column(conn, sql, key, "superseded flag")? != 0,
            })
        },
    )
}

/// The ledger's `fail`: reads each row and writes what the rules make of it.
pub(super) fn fail(
    cx: &mut Ctx<'_>,
    policy: &Policy,
    failures: &[Failure],
) -> Res<Vec<Result<Failed, Refused>>> {
    let now = cx.now();
    failures
        .iter()
        .map(|f| {
            let event = Event::Fail {
                token: f.claim.token,
                error: &f.error,
            };
            Ok(held(cx, &f.claim, &event, policy, now)?.into_failed())
        })
        .collect()
}

/// The ledger's `release`.
pub(super) fn release(cx: &mut Ctx<'_>, claims: &[Claim]) -> Res<Vec<Result<(), Refused>>> {
    guarded(
        cx,
        claims,
        None,
        "DELETE FROM qupid_entries WHERE key = ?1 AND token = ?2 AND state IN (0, 1)",
        0,
        |token| Event::Release { token },
        |_, _| Ok(()),
    )
}

/// The ledger's `remove`. A row that does not decode is removed only with `force` (its
/// holder, if any, is then fenced out like any other); without it, the call fails naming the
/// key, since its state is unknown.
pub(super) fn remove(cx: &mut Ctx<'_>, keys: &[Key], force: bool) -> Res<Vec<Removed>> {
    keys.iter()
        .map(|k| match admin(cx, k, &Event::Remove { force }) {
            Err(Fault::Unreadable(_)) if force => {
                delete(cx.conn, k.as_str())?;
                Ok(Removed::Removed)
            }
            other => Ok(other.map_err(|f| of_key(f, k.as_str()))?.into_removed()),
        })
        .collect()
}

/// The ledger's `retry`. A row that does not decode fails the call, naming the key.
pub(super) fn retry(cx: &mut Ctx<'_>, keys: &[Key]) -> Res<Vec<Retried>> {
    keys.iter()
        .map(|k| {
            let answer = admin(cx, k, &Event::Retry).map_err(|f| of_key(f, k.as_str()))?;
            Ok(answer.into_retried())
        })
        .collect()
}

/// Applies the administration `event` (remove, retry) to `key`'s row, by the rules. A row
/// that does not decode is [`Fault::Unreadable`], as for every transition (so a row one of
/// them refuses is never removed without `force`).
fn admin(cx: &mut Ctx<'_>, key: &Key, event: &Event<'_>) -> Res<Answer> {
    let row = load(cx.conn, key.as_str())?;
    let d = decide(
        row.as_ref().map(Row::facts).as_ref(),
        event,
        &Policy::default(),
        Timestamp(0),
    );
    write(
        cx,
        key.as_str(),
        d.write,
        row.as_ref().map_or(0, |r| r.token),
    )?;
    Ok(d.answer)
}

/// Rows deleted per writer job by `purge`: each chunk is one job on the writer thread, so
/// the offers, starts and completions queued behind it run before the next chunk.
pub(super) const PURGE_CHUNK: u64 = 1_000;

/// Which rows of one finished state a purge deletes: the rows of a chunk are the oldest
/// that match (the purge index keeps them in `(at, key)` order).
#[derive(Debug, Clone)]
pub(super) enum PurgeBound {
    /// Every row of the state.
    All,
    /// The rows finished at or before this time (milliseconds).
    AtOrBefore(i64),
    /// The rows at or below the row with this `at` and key in `(at, key)` order: the oldest
    /// rows past the newest that `max_count` keeps. The values are bound as they were read,
    /// whatever they are stored as.
    UpTo(Value, Value),
}

/// The bound of a purge of `keep.max_age` at `now`, if it has one: the memory ledger purges
/// when `now.since(at) >= age`, with `since` in whole milliseconds, saturating at zero:
/// that is `at <= now - ceil_ms(age)`, or every record when the age is zero. `None` when
/// nothing is that old (the clock is not yet `age` past the epoch).
pub(super) fn age_bound(age: Duration, now: u64) -> Option<PurgeBound> {
    let age_ms = ceil_millis(age);
    if age_ms == 0 {
        Some(PurgeBound::All)
    } else {
        now.checked_sub(age_ms)
            .map(|before| PurgeBound::AtOrBefore(sql_int(before)))
    }
}

/// The bound of a purge keeping the newest `max` rows of `state` (ties broken by key, as in
/// every ledger): the newest row past them, or `None` when there are at most `max` rows.
/// One read of the purge index, stopping at that row.
pub(super) fn count_bound(conn: &Connection, state: State, max: u64) -> Res<Option<PurgeBound>> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, key FROM qupid_entries WHERE state = ?1 AND state >= 2
         ORDER BY at DESC, key DESC LIMIT 1 OFFSET ?2",
    )?;
    let mut rows = stmt.query([state_code(state), sql_int(max)])?;
    match rows.next()? {
        Some(row) => Ok(Some(PurgeBound::UpTo(row.get(0)?, row.get(1)?))),
        None => Ok(None),
    }
}

/// Deletes at most `limit` rows of `state` within `bound`, the oldest first: how many. One
/// chunk of a purge, which loops until a chunk deletes fewer than `limit`.
///
/// Every statement says `state >= 2`, the condition of the purge index, so SQLite may use
/// it; the rows to delete are the first of the index's range for the state, so a chunk reads
/// about as many index entries as it deletes.
pub(super) fn purge_chunk(
    conn: &Connection,
    state: State,
    bound: &PurgeBound,
    limit: u64,
) -> Res<u64> {
    let (code, limit) = (state_code(state), sql_int(limit));
    let n = match bound {
        PurgeBound::All => conn
            .prepare_cached(
                "DELETE FROM qupid_entries WHERE key IN (
                   SELECT key FROM qupid_entries WHERE state = ?1 AND state >= 2 LIMIT ?2)",
            )?
            .execute(params![code, limit])?,
        PurgeBound::AtOrBefore(before) => conn
            .prepare_cached(
                "DELETE FROM qupid_entries WHERE key IN (
                   SELECT key FROM qupid_entries WHERE state = ?1 AND state >= 2 AND at <= ?2
                   LIMIT ?3)",
            )?
            .execute(params![code, before, limit])?,
        PurgeBound::UpTo(at, key) => conn
            .prepare_cached(
                "DELETE FROM qupid_entries WHERE key IN (
                   SELECT key FROM qupid_entries WHERE state = ?1 AND state >= 2 AND at <= ?2
                     AND (at < ?2 OR key <= ?3)
                   LIMIT ?4)",
            )?
            .execute(params![code, at, key, limit])?,
    };
    Ok(n as u64)
}

fn ceil_millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The ledger's `get`.
pub(super) fn get(conn: &Connection, key: Key) -> Res<Option<Record>> {
    let row = load(conn, key.as_str()).map_err(|f| of_key(f, key.as_str()))?;
    Ok(row.map(|row| row.record(key)))
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
        let key = match text(row, 0, "a key") {
            Ok(Some(key)) => key,
            Ok(None) => return Err(corrupt("expected a key, found NULL")),
            Err(Fault::Unreadable(u)) => return Err(corrupt(format!("a row's key is an {u}"))),
            Err(e) => return Err(e),
        };
        let key = Key::new(key).map_err(|e| corrupt(format!("key: {e}")))?;
        let r = read_row(row, 1).map_err(|f| of_key(f, key.as_str()))?;
        records.push(r.record(key));
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

/// The statement of `stats` (parameter: now): each count reads the partial index of its state,
/// not the table. Expired leases are found through the leased rows' index, each row's expiry
/// read from the table by its key: that count costs time in proportion to the leased rows.
pub(super) const STATS_SQL: &str =
    "SELECT (SELECT count(*) FROM qupid_entries WHERE state = 0 AND state < 2),
            (SELECT count(*) FROM qupid_entries WHERE state = 1 AND state < 2),
            (SELECT count(*) FROM qupid_entries WHERE state = 2 AND state >= 2),
            (SELECT count(*) FROM qupid_entries WHERE state = 3),
            (SELECT count(*) FROM qupid_entries INDEXED BY qupid_entries_leased_by_state_key
               WHERE state < 2 AND at <= ?1)";

/// The ledger's `stats`: one statement, so one consistent snapshot. A lease has expired when
/// the clock has reached its expiry, as the next offer decides (`now < at` is a valid lease).
pub(super) fn stats(conn: &Connection, now: Timestamp) -> Res<Stats> {
    let mut stmt = conn.prepare_cached(STATS_SQL)?;
    let mut rows = stmt.query([sql_int(now.0)])?;
    let row = rows
        .next()?
        .ok_or_else(|| corrupt("expected a row of counts, found none"))?;
    let count = |i: usize| -> Res<u64> {
        let n: i64 = row.get(i)?;
        u64::try_from(n).map_err(|_| corrupt(format!("expected a count, found {n}")))
    };
    Ok(Stats {
        queued: count(0)?,
        running: count(1)?,
        completed: count(2)?,
        dead: count(3)?,
        expired: count(4)?,
    })
}
