//! The `--json` shapes. Their own types, not the library's, so that a change inside qupid
//! cannot silently change what scripts read; the crate docs and the README document them.

use qupid::clock::Timestamp;
use qupid::ledger::{Record, Stats};
use serde::Serialize;

/// A record (`show`, and each item of `list`).
#[derive(Debug, Serialize)]
pub(crate) struct RecordJson<'a> {
    pub(crate) key: &'a str,
    pub(crate) state: &'static str,
    pub(crate) version: Option<&'a str>,
    pub(crate) newer_version: Option<&'a str>,
    pub(crate) attempts: u32,
    pub(crate) abandoned: u32,
    pub(crate) token: u64,
    pub(crate) expires_at_ms: Option<u64>,
    pub(crate) finished_at_ms: Option<u64>,
    pub(crate) last_error: Option<&'a str>,
    pub(crate) superseded: bool,
}

impl<'a> From<&'a Record> for RecordJson<'a> {
    fn from(r: &'a Record) -> Self {
        RecordJson {
            key: r.key.as_str(),
            state: r.state.as_str(),
            version: r.version.as_ref().map(|v| v.as_str()),
            newer_version: r.newer_version.as_ref().map(|v| v.as_str()),
            attempts: r.attempts,
            abandoned: r.abandoned,
            token: r.token.get(),
            expires_at_ms: r.expires_at.map(Timestamp::as_millis),
            finished_at_ms: r.finished_at.map(Timestamp::as_millis),
            last_error: r.last_error.as_deref(),
            superseded: r.superseded,
        }
    }
}

/// Counts per state (`stats`).
#[derive(Debug, Serialize)]
pub(crate) struct CountsJson {
    pub(crate) queued: u64,
    pub(crate) running: u64,
    pub(crate) completed: u64,
    pub(crate) dead: u64,
}

impl From<Stats> for CountsJson {
    fn from(s: Stats) -> Self {
        CountsJson {
            queued: s.queued,
            running: s.running,
            completed: s.completed,
            dead: s.dead,
        }
    }
}

/// `stats`.
#[derive(Debug, Serialize)]
pub(crate) struct StatsJson<'a> {
    pub(crate) ledger: &'a str,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) now_ms: u64,
    pub(crate) counts: CountsJson,
    pub(crate) total: u64,
    /// Of the queued and running records, those whose lease has expired (counted in `counts`
    /// already).
    pub(crate) expired_leases: u64,
    pub(crate) oldest_lease_expires_at_ms: Option<u64>,
}

/// `list`.
#[derive(Debug, Serialize)]
pub(crate) struct ListJson<'a> {
    pub(crate) state: &'static str,
    pub(crate) records: Vec<RecordJson<'a>>,
    pub(crate) next: Option<&'a str>,
}

/// One key's outcome in `remove` and `retry`.
#[derive(Debug, Serialize)]
pub(crate) struct OutcomeJson<'a> {
    pub(crate) key: &'a str,
    /// `removed`, `retried`, `not_found`, `refused` (remove: leased) or `not_dead` (retry).
    pub(crate) outcome: &'static str,
    /// The key's state when it was refused; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) state: Option<&'static str>,
}

/// `remove`.
#[derive(Debug, Serialize)]
pub(crate) struct RemoveJson<'a> {
    pub(crate) force: bool,
    pub(crate) removed: u64,
    pub(crate) results: Vec<OutcomeJson<'a>>,
}

/// `retry`.
#[derive(Debug, Serialize)]
pub(crate) struct RetryJson<'a> {
    pub(crate) all_dead: bool,
    pub(crate) retried: u64,
    pub(crate) results: Vec<OutcomeJson<'a>>,
}

/// `purge`.
#[derive(Debug, Serialize)]
pub(crate) struct PurgeJson {
    pub(crate) dry_run: bool,
    pub(crate) older_than_secs: u64,
    pub(crate) now_ms: u64,
    /// Completed records purged (or, with `dry_run`, that would be); `None` if not chosen.
    pub(crate) completed: Option<u64>,
    /// Dead records purged (or, with `dry_run`, that would be); `None` if not chosen.
    pub(crate) dead: Option<u64>,
}

/// `value` as one line of JSON.
pub(crate) fn line<T: Serialize>(value: &T) -> anyhow::Result<String> {
    let mut s = serde_json::to_string(value)?;
    s.push('\n');
    Ok(s)
}
