//! Reading rows back: records, answers of the transition statements, and the numbers that
//! cross between qupid's types and PostgreSQL's.

use std::time::Duration;

use tokio_postgres::Row;

use crate::clock::{millis, Timestamp};
use crate::error::{Error, ErrorKind, Result};
use crate::key::{Key, Version};
use crate::ledger::types::{Record, State, Token};
use crate::policy::Blocking;

/// The largest duration sent to the server, in ms: far beyond any real lease or window, and
/// small enough that adding it to a timestamp cannot overflow a `bigint`.
const MAX_MS: i64 = i64::MAX / 4;

/// A duration in whole milliseconds, rounded down (as the memory ledger adds leases).
pub(super) fn floor_ms(d: Duration) -> i64 {
    i64::try_from(millis(d)).unwrap_or(MAX_MS).min(MAX_MS)
}

/// A duration in whole milliseconds, rounded up: `elapsed_ms < ceil(d)` exactly when
/// `Duration::from_millis(elapsed_ms) < d`, which is how the memory ledger compares.
pub(super) fn ceil_ms(d: Duration) -> i64 {
    let up = d + Duration::from_nanos(999_999);
    floor_ms(up)
}

/// How long a finished record blocks, in ms: `None` forever, `Some(0)` not at all.
pub(super) fn window_ms(b: Blocking) -> Option<i64> {
    match b {
        Blocking::Forever => None,
        Blocking::For(d) => Some(ceil_ms(d)),
        Blocking::Never => Some(0),
    }
}

/// A count for the server, capped where every record's counts saturate
/// ([`MAX_COUNT`](crate::ledger::rules::MAX_COUNT)).
pub(super) fn count_cap(n: u32) -> i64 {
    i64::from(n.min(crate::ledger::rules::MAX_COUNT))
}

/// A token for the server; one too large to have been issued matches no row.
pub(super) fn token_param(t: Token) -> i64 {
    i64::try_from(t.0).unwrap_or(-1)
}

/// The state stored as `code`.
pub(super) fn state(code: i64, ns: &str) -> Result<State> {
    match code {
        0 => Ok(State::Queued),
        1 => Ok(State::Running),
        2 => Ok(State::Completed),
        3 => Ok(State::Dead),
        other => Err(corrupt(ns, format!("a record has the state code {other}"))),
    }
}

/// The code `state` is stored as.
pub(super) fn state_code(state: State) -> i16 {
    match state {
        State::Queued => 0,
        State::Running => 1,
        State::Completed => 2,
        State::Dead => 3,
    }
}

/// A time read from the server.
pub(super) fn timestamp(ms: i64, ns: &str) -> Result<Timestamp> {
    u64::try_from(ms)
        .map(Timestamp)
        .map_err(|_| corrupt(ns, format!("a time of {ms} ms before 1970")))
}

fn count(n: i32, what: &str, ns: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| corrupt(ns, format!("a record has {n} {what}")))
}

/// What makes a record unreadable, in words, or `None`: the same test as the statements'
/// (`sql::BAD`), so that `get` fails on exactly the records the transitions answer as
/// unreadable (and on versions that do not decode, which only `get` and `list` decode).
pub(super) fn unreadable(token: i64, at_ms: i64, attempts: i32, abandoned: i32) -> Option<String> {
    if token < 0 {
        Some(format!("a token of {token}"))
    } else if at_ms < 0 {
        Some(format!("a time of {at_ms}"))
    } else if attempts < 0 {
        Some(format!("an attempt count of {attempts}"))
    } else if abandoned < 0 {
        Some(format!("an abandoned count of {abandoned}"))
    } else {
        None
    }
}

/// The error of a call that cannot answer an unreadable record for its key alone.
pub(super) fn unreadable_key(ns: &str, key: &str, found: &str) -> Error {
    corrupt(
        ns,
        format!(
            "key {key:?} holds an unreadable record: found {found}; `remove` with force deletes it"
        ),
    )
}

/// Decodes a row of the columns [`RECORD_COLUMNS`](super::sql::RECORD_COLUMNS).
pub(super) fn record(row: &Row, ns: &str) -> Result<Record> {
    let pg = |e| pg_corrupt(ns, e);
    let key: Vec<u8> = row.try_get(0).map_err(pg)?;
    let key = String::from_utf8(key)
        .ok()
        .and_then(|k| Key::new(k).ok())
        .ok_or_else(|| corrupt(ns, "a record's key is not a valid key".to_owned()))?;
    let state = state(i64::from(row.try_get::<_, i16>(1).map_err(pg)?), ns)?;
    let (token, at, attempts, abandoned): (i64, i64, i32, i32) = (
        row.try_get(2).map_err(pg)?,
        row.try_get(3).map_err(pg)?,
        row.try_get(4).map_err(pg)?,
        row.try_get(5).map_err(pg)?,
    );
    if let Some(found) = unreadable(token, at, attempts, abandoned) {
        return Err(unreadable_key(ns, key.as_str(), &found));
    }
    let token = Token(u64::try_from(token).unwrap_or(0));
    let at = timestamp(at, ns)?;
    let attempts = count(attempts, "attempts", ns)?;
    let abandoned = count(abandoned, "abandonments", ns)?;
    let version_of = |i: usize| -> Result<Option<Version>> {
        version(row.try_get(i).map_err(pg)?, ns).map_err(|_| {
            unreadable_key(
                ns,
                key.as_str(),
                "a version that is not valid (not UTF-8, empty or too long)",
            )
        })
    };
    let newer_version = version_of(7)?;
    let version = version_of(6)?;
    let last_error = row
        .try_get::<_, Option<Vec<u8>>>(8)
        .map_err(pg)?
        .map(|e| String::from_utf8_lossy(&e).into_owned());
    let superseded: bool = row.try_get(9).map_err(pg)?;
    Ok(Record {
        key,
        state,
        version,
        newer_version,
        attempts,
        abandoned,
        token,
        expires_at: state.is_leased().then_some(at),
        finished_at: state.is_finished().then_some(at),
        last_error,
        superseded,
    })
}

fn version(v: Option<Vec<u8>>, ns: &str) -> Result<Option<Version>> {
    v.map(|v| {
        String::from_utf8(v)
            .ok()
            .and_then(|v| Version::new(v).ok())
            .ok_or_else(|| corrupt(ns, "a record's version is not a valid version".to_owned()))
    })
    .transpose()
}

/// A namespace whose data is not what this build wrote.
pub(super) fn corrupt(ns: &str, what: String) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("postgres namespace {ns:?} holds data this version of qupid did not write: {what}"),
    )
}

fn pg_corrupt(ns: &str, e: tokio_postgres::Error) -> Error {
    Error::with_source(
        ErrorKind::Corrupt,
        format!("postgres namespace {ns:?} answered with unexpected columns: {e}"),
        e,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_compare_like_durations() {
        assert_eq!(ceil_ms(Duration::from_millis(5)), 5);
        assert_eq!(ceil_ms(Duration::from_micros(5_001)), 6);
        assert_eq!(ceil_ms(Duration::ZERO), 0);
        assert_eq!(floor_ms(Duration::from_micros(5_999)), 5);
        assert_eq!(floor_ms(Duration::MAX), MAX_MS);
        assert_eq!(window_ms(Blocking::Never), Some(0));
        assert_eq!(window_ms(Blocking::Forever), None);
        // elapsed < window, in whole milliseconds, as the memory ledger decides it.
        let w = Duration::from_micros(1_500);
        for elapsed in 0..4u64 {
            assert_eq!(
                (elapsed as i64) < ceil_ms(w),
                Duration::from_millis(elapsed) < w
            );
        }
    }

    #[test]
    fn numbers_cross_safely() {
        assert_eq!(token_param(Token(7)), 7);
        assert_eq!(token_param(Token(u64::MAX)), -1);
        assert_eq!(count_cap(u32::MAX), 65_535);
        assert!(timestamp(-1, "ns").is_err());
        assert_eq!(state(3, "ns").unwrap(), State::Dead);
        assert_eq!(state(9, "ns").unwrap_err().kind(), ErrorKind::Corrupt);
    }
}
