//! The JSON shapes of the dashboard's API and of the CLI's `--json` (which uses these very
//! types), so a script reads either alike. Their own types, not the library's, so that a
//! change inside qupid cannot silently change them. Times are milliseconds since the Unix
//! epoch on the ledger's clock; states are their lowercase names.

use qupid::clock::Timestamp;
use qupid::ledger::{Record, Removed, Retried, Stats};
use qupid::Key;
use serde::Serialize;

/// A record (`show`, and each item of `list`).
#[derive(Debug, Serialize)]
pub struct RecordJson<'a> {
    /// The key.
    pub key: &'a str,
    /// Its state.
    pub state: &'static str,
    /// The version being processed, or the one that finished.
    pub version: Option<&'a str>,
    /// A newer version offered while in flight.
    pub newer_version: Option<&'a str>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Times a lease on it expired without an ending.
    pub abandoned: u32,
    /// The current (or last) fencing token.
    pub token: u64,
    /// When the lease runs out (queued and running only).
    pub expires_at_ms: Option<u64>,
    /// When it finished (completed and dead only).
    pub finished_at_ms: Option<u64>,
    /// The error of the last failed attempt.
    pub last_error: Option<&'a str>,
    /// Completed while a newer version was offered: does not block.
    pub superseded: bool,
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

/// Counts per state.
#[derive(Debug, Serialize)]
pub struct CountsJson {
    /// Records queued.
    pub queued: u64,
    /// Records running.
    pub running: u64,
    /// Records completed.
    pub completed: u64,
    /// Records dead.
    pub dead: u64,
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
pub struct StatsJson<'a> {
    /// The ledger, as a URL with any password hidden.
    pub ledger: &'a str,
    /// The namespace, for shared ledgers.
    pub namespace: Option<&'a str>,
    /// The ledger's clock.
    pub now_ms: u64,
    /// Counts per state.
    pub counts: CountsJson,
    /// All records.
    pub total: u64,
    /// Of the queued and running records, those whose lease has expired (counted in `counts` already).
    pub expired_leases: u64,
    /// The earliest lease expiry among queued and running records.
    pub oldest_lease_expires_at_ms: Option<u64>,
}

/// `list`.
#[derive(Debug, Serialize)]
pub struct ListJson<'a> {
    /// The state listed.
    pub state: &'static str,
    /// The records, in key order.
    pub records: Vec<RecordJson<'a>>,
    /// The cursor of the next page, if there is one.
    pub next: Option<&'a str>,
}

/// One key's outcome in `remove` and `retry`.
#[derive(Debug, Serialize)]
pub struct OutcomeJson<'a> {
    /// The key.
    pub key: &'a str,
    /// `removed`, `retried`, `not_found`, `refused` (remove: leased) or `not_dead` (retry).
    pub outcome: &'static str,
    /// The key's state when it was refused; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
}

impl<'a> OutcomeJson<'a> {
    /// The outcome of removing `key`.
    pub fn removed(key: &'a Key, r: Removed) -> Self {
        let (outcome, state) = match r {
            Removed::Removed => ("removed", None),
            Removed::NotFound => ("not_found", None),
            Removed::Leased(s) => ("refused", Some(s.as_str())),
        };
        OutcomeJson {
            key: key.as_str(),
            outcome,
            state,
        }
    }

    /// The outcome of retrying `key`.
    pub fn retried(key: &'a Key, r: Retried) -> Self {
        let (outcome, state) = match r {
            Retried::Retried => ("retried", None),
            Retried::NotFound => ("not_found", None),
            Retried::NotDead(s) => ("not_dead", Some(s.as_str())),
        };
        OutcomeJson {
            key: key.as_str(),
            outcome,
            state,
        }
    }
}

/// `remove`.
#[derive(Debug, Serialize)]
pub struct RemoveJson<'a> {
    /// Whether leased keys were removed too.
    pub force: bool,
    /// Records removed.
    pub removed: u64,
    /// One outcome per key, in order.
    pub results: Vec<OutcomeJson<'a>>,
}

/// `retry`.
#[derive(Debug, Serialize)]
pub struct RetryJson<'a> {
    /// Whether every dead record was retried.
    pub all_dead: bool,
    /// Records retried.
    pub retried: u64,
    /// One outcome per key, in order.
    pub results: Vec<OutcomeJson<'a>>,
}

/// `purge`.
#[derive(Debug, Serialize)]
pub struct PurgeJson {
    /// Counted only, nothing removed.
    pub dry_run: bool,
    /// The age purged past, in seconds.
    pub older_than_secs: u64,
    /// The ledger's clock.
    pub now_ms: u64,
    /// Completed records purged (or, with `dry_run`, that would be); `None` if not chosen.
    pub completed: Option<u64>,
    /// Dead records purged (or, with `dry_run`, that would be); `None` if not chosen.
    pub dead: Option<u64>,
}
