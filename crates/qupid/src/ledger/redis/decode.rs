//! Reading script replies: integers, states and records.

use ::redis::Value;

use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind, Result};
use crate::key::{Key, Version};
use crate::ledger::types::{Record, State, Token, Unreadable};

/// The largest duration in ms handed to a script: Lua numbers are doubles, exact below 2^53,
/// and a timestamp plus this stays below that (this is about 35,000 years).
pub(super) const MAX_MS: u64 = 1 << 50;

/// Whole milliseconds of `d`, rounded down (lease lengths, like `Timestamp::add`).
pub(super) fn ms_floor(d: std::time::Duration) -> u64 {
    crate::clock::millis(d).min(MAX_MS)
}

/// Milliseconds of `d`, rounded up: a window or age compared with a whole-ms age (`since`),
/// so that `since < window` means the same here as in Rust.
pub(super) fn ms_ceil(d: std::time::Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).min(MAX_MS)
}

/// A reply that is not what the script promises: the scripts and this code disagree.
pub(super) fn bad_reply(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Ledger,
        format!("the redis {what} script answered an unexpected reply: {detail}"),
    )
}

/// The integer at `i`.
pub(super) fn int(values: &[Value], i: usize, what: &str) -> Result<i64> {
    match values.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        other => Err(bad_reply(
            what,
            format!("item {i} is {other:?}, not an integer"),
        )),
    }
}

/// The item whose reply starts at `i`, if it is unreadable: the batch scripts then answer, in
/// place of that item's first integer, a string saying what its record key holds.
pub(super) fn unreadable(values: &[Value], i: usize) -> Option<Unreadable> {
    match values.get(i) {
        Some(Value::BulkString(found)) => {
            Some(Unreadable::new(String::from_utf8_lossy(found).into_owned()))
        }
        _ => None,
    }
}

/// The string at `i`, as bytes.
pub(super) fn bytes(values: &[Value], i: usize, what: &str) -> Result<Vec<u8>> {
    match values.get(i) {
        Some(Value::BulkString(b)) => Ok(b.clone()),
        other => Err(bad_reply(
            what,
            format!("item {i} is {other:?}, not a string"),
        )),
    }
}

/// The non-negative integer at `i`.
pub(super) fn uint(values: &[Value], i: usize, what: &str) -> Result<u64> {
    let n = int(values, i, what)?;
    u64::try_from(n).map_err(|_| bad_reply(what, format!("item {i} is negative: {n}")))
}

/// A small count (attempts), saturating.
pub(super) fn count(values: &[Value], i: usize, what: &str) -> Result<u32> {
    Ok(u32::try_from(uint(values, i, what)?).unwrap_or(u32::MAX))
}

/// The state coded by the scripts' `CODE` table.
pub(super) fn state(code: i64, what: &str) -> Result<State> {
    match code {
        0 => Ok(State::Queued),
        1 => Ok(State::Running),
        2 => Ok(State::Completed),
        3 => Ok(State::Dead),
        n => Err(bad_reply(what, format!("unknown state code {n}"))),
    }
}

/// The letter a state has in records and script arguments.
pub(super) fn letter(s: State) -> &'static str {
    match s {
        State::Queued => "q",
        State::Running => "r",
        State::Completed => "c",
        State::Dead => "d",
    }
}

/// Checks that a reply has `per` values for each of `n` items.
pub(super) fn expect_len(values: &[Value], n: usize, per: usize, what: &str) -> Result<()> {
    if values.len() == n * per {
        Ok(())
    } else {
        Err(bad_reply(
            what,
            format!(
                "{} values for {n} items, expected {}",
                values.len(),
                n * per
            ),
        ))
    }
}

fn corrupt_record(key: &str, detail: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("the redis record of key {key:?} is damaged: {detail}"),
    )
}

/// The user key stored as a sorted-set member.
pub(super) fn key(member: &Value, namespace: &str) -> Result<Key> {
    let Value::BulkString(bytes) = member else {
        return Err(bad_reply("list", format!("a key is {member:?}")));
    };
    let s = std::str::from_utf8(bytes).map_err(|_| {
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "an index of redis namespace {namespace:?} holds a key that is not UTF-8: {:?}",
                String::from_utf8_lossy(bytes)
            ),
        )
    })?;
    Key::new(s).map_err(|e| {
        Error::with_source(
            ErrorKind::Corrupt,
            format!("an index of redis namespace {namespace:?} holds an invalid key {s:?}"),
            e,
        )
    })
}

/// A record from the flat list of field names and values the `get` and `list` scripts answer.
pub(super) fn record(key: Key, fields: &Value) -> Result<Record> {
    let Value::Array(raw) = fields else {
        return Err(bad_reply("get", format!("a record is {fields:?}")));
    };
    let k = key.as_str();
    let text = |v: &Value| -> Result<String> {
        match v {
            Value::BulkString(b) => {
                String::from_utf8(b.clone()).map_err(|_| corrupt_record(k, "a field is not UTF-8"))
            }
            other => Err(bad_reply("get", format!("a field is {other:?}"))),
        }
    };
    let (mut s, mut t, mut x, mut a, mut b) = (None, None, None, None, None);
    let (mut version, mut newer, mut error, mut superseded) = (None, None, None, false);
    for pair in raw.chunks(2) {
        let [name, value] = pair else {
            return Err(bad_reply("get", "an odd number of record fields"));
        };
        let name = text(name)?;
        let value = text(value)?;
        let number = |v: &str| -> Result<i64> {
            v.parse()
                .map_err(|_| corrupt_record(k, format!("field {name} is {v:?}, not a number")))
        };
        let ver = |v: String| -> Result<Version> {
            Version::new(v).map_err(|e| corrupt_record(k, format!("field {name}: {e}")))
        };
        match name.as_str() {
            "s" => s = Some(value),
            "t" => t = Some(number(&value)?),
            "x" => x = Some(number(&value)?),
            "a" => a = Some(number(&value)?),
            "b" => b = Some(number(&value)?),
            "v" => version = Some(ver(value)?),
            "n" => newer = Some(ver(value)?),
            "e" => error = Some(value),
            "p" => superseded = value == "1",
            _ => {}
        }
    }
    let missing = |f: &str| corrupt_record(k, format!("field {f} is missing"));
    let state = match s.as_deref() {
        Some("q") => State::Queued,
        Some("r") => State::Running,
        Some("c") => State::Completed,
        Some("d") => State::Dead,
        Some(other) => return Err(corrupt_record(k, format!("unknown state {other:?}"))),
        None => return Err(missing("s")),
    };
    let at = Timestamp(u64::try_from(x.ok_or_else(|| missing("x"))?).unwrap_or(0));
    let small = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    let attempts = small(a.ok_or_else(|| missing("a"))?);
    let abandoned = small(b.ok_or_else(|| missing("b"))?);
    let token = Token(u64::try_from(t.ok_or_else(|| missing("t"))?).unwrap_or(0));
    Ok(Record {
        key,
        state,
        version,
        newer_version: newer,
        attempts,
        abandoned,
        token,
        expires_at: state.is_leased().then_some(at),
        finished_at: state.is_finished().then_some(at),
        last_error: error,
        superseded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn windows_round_up_and_leases_down() {
        assert_eq!(ms_ceil(Duration::from_micros(1500)), 2);
        assert_eq!(ms_ceil(Duration::from_millis(5)), 5);
        assert_eq!(ms_ceil(Duration::ZERO), 0);
        assert_eq!(ms_floor(Duration::from_micros(1500)), 1);
        assert_eq!(ms_floor(Duration::MAX), MAX_MS);
        assert_eq!(ms_ceil(Duration::MAX), MAX_MS);
    }

    #[test]
    fn records_decode_and_damage_is_reported() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let fields = Value::Array(
            [
                "s", "c", "t", "7", "x", "1000", "a", "2", "b", "1", "v", "v1", "p", "1",
            ]
            .iter()
            .map(|s| bulk(s))
            .collect(),
        );
        let r = record(Key::new("k").expect("key"), &fields).expect("record");
        assert_eq!(r.state, State::Completed);
        assert_eq!(r.token, Token(7));
        assert_eq!(r.finished_at, Some(Timestamp(1000)));
        assert_eq!(r.expires_at, None);
        assert_eq!((r.attempts, r.abandoned, r.superseded), (2, 1, true));
        assert_eq!(r.version.as_ref().map(Version::as_str), Some("v1"));
        let bad = Value::Array(vec![bulk("s"), bulk("z")]);
        let err = record(Key::new("k").expect("key"), &bad).expect_err("bad state");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
    }
}
