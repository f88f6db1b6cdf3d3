//! The JSON API's shapes: the same as the CLI's `--json` (see the qupid-cli README), field
//! for field, so a script can read either. Their own types, not the library's, so that a
//! change inside qupid cannot silently change them.

use qupid::clock::Timestamp;
use qupid::ledger::{Record, Removed, Retried, Stats};
use qupid::Key;
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

/// Counts per state.
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
    pub(crate) outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) state: Option<&'static str>,
}

impl<'a> OutcomeJson<'a> {
    pub(crate) fn removed(key: &'a Key, r: Removed) -> Self {
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

    pub(crate) fn retried(key: &'a Key, r: Retried) -> Self {
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
    pub(crate) completed: Option<u64>,
    pub(crate) dead: Option<u64>,
}
