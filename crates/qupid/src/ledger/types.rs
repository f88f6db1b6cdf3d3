//! The values that go in and out of a [`Ledger`](super::Ledger).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::key::{Key, Version};

/// The state of a key in the ledger. A key with no record is *absent*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Accepted and leased, waiting for a worker (or for a retry after a failed attempt).
    Queued,
    /// Leased and being worked on.
    Running,
    /// Done: saved successfully.
    Completed,
    /// Gave up: out of attempts, or abandoned too many times.
    Dead,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 4] = [State::Queued, State::Running, State::Completed, State::Dead];

    /// Whether a key in this state is held by a lease (Queued or Running).
    pub fn is_leased(self) -> bool {
        matches!(self, State::Queued | State::Running)
    }

    /// Whether this is a final state (Completed or Dead).
    pub fn is_finished(self) -> bool {
        !self.is_leased()
    }

    /// The state's lowercase name, as used by the CLI and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Completed => "completed",
            State::Dead => "dead",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for State {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                crate::Error::config(format!(
                    "expected a state (queued, running, completed or dead), found {s:?}"
                ))
            })
    }
}

/// A fencing token: a number that only grows, handed out with every new lease.
///
/// An operation carrying an older token than the key's current one changes nothing. Pass it
/// to your store to make a save conditional ("write only if my token is the newest").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(pub(crate) u64);

impl Token {
    /// The token numbered `n`. Ledgers issue tokens; make one to read a token back from where
    /// your store kept it, or in tests.
    pub const fn new(n: u64) -> Token {
        Token(n)
    }

    /// The token's number, to keep beside your output (a conditional save compares it).
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A holder's claim on a key: the key and the token of its lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    /// The key held.
    pub key: Key,
    /// The token of the lease.
    pub token: Token,
}

/// A failed attempt to report: the claim and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The claim whose attempt failed.
    pub claim: Claim,
    /// The error, as text (kept on the record, shown by `get` and the CLI).
    pub error: String,
}

/// A lease granted by an accepted offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The fencing token of the lease.
    pub token: Token,
    /// When the lease runs out unless renewed.
    pub expires_at: Timestamp,
    /// Attempts already made on this key (non-zero when a crashed holder's lease was taken over).
    pub attempts: u32,
}

impl Lease {
    /// A lease under `token` until `expires_at`, `attempts` made so far: what a ledger
    /// answers for an accepted offer.
    pub fn new(token: Token, expires_at: Timestamp, attempts: u32) -> Lease {
        Lease {
            token,
            expires_at,
            attempts,
        }
    }
}

/// The answer to one offer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Offered {
    /// The key is yours to process: it is Queued under this lease.
    Accepted(Lease),
    /// The key is already in this state and blocks the offer. Nothing changed (except that a
    /// newer version may be remembered).
    Duplicate(State),
    /// The offered version is older than the newest version the ledger has accepted for the
    /// key; nothing changed. The key is in this state.
    ///
    /// Only an [ordered](crate::Version::ordered) version is ever outdated, and only against
    /// ordered versions: the record's version, or the newer version remembered while the key
    /// is in flight (see [the rule](super#ordered-versions)). It is refused whatever the
    /// state, the lease and the blocking policy say, so a stale snapshot of a record is never
    /// processed after a newer one.
    Outdated(State),
    /// The ledger holds something under the key that it cannot read (a foreign value, a
    /// damaged record): the key is neither accepted nor blocked by a state, and nothing was
    /// changed for it. It stays so until someone repairs it: a forced
    /// [`remove`](super::LedgerAdmin::remove) (`qupid remove --force KEY`) deletes what is there.
    Unreadable(Unreadable),
}

impl Offered {
    /// The lease, if the offer was accepted.
    pub fn lease(&self) -> Option<Lease> {
        match self {
            Offered::Accepted(l) => Some(*l),
            Offered::Duplicate(_) | Offered::Outdated(_) | Offered::Unreadable(_) => None,
        }
    }
}

/// Whether an offer of `offered` is outdated for a record holding `version` and, while in
/// flight, the remembered `newer` version: `offered` is ordered and older than one of them
/// that is ordered. Opaque versions, and an offer without one, are never outdated. See
/// [ordered versions](super#ordered-versions).
pub(crate) fn is_outdated(
    offered: Option<&Version>,
    version: Option<&Version>,
    newer: Option<&Version>,
) -> bool {
    let Some(w) = offered.and_then(Version::as_ordered) else {
        return false;
    };
    [version, newer]
        .into_iter()
        .flatten()
        .filter_map(Version::as_ordered)
        .any(|accepted| w < accepted)
}

/// A record the ledger holds under a key but cannot read: a foreign value in the namespace,
/// or a damaged record. Nothing was changed for that key.
///
/// It is an answer for that one key ([`Offered::Unreadable`], [`Refused::Unreadable`]): the
/// other items of the batch are answered as usual. Problems of the whole namespace (a
/// damaged token counter or index, a schema or layout of a newer qupid) fail the call with
/// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("unreadable record: found {found}")]
pub struct Unreadable {
    found: Arc<str>,
}

impl Unreadable {
    /// An unreadable record; `found` says what was there, for a person to read ("a list",
    /// "state code 9").
    pub fn new(found: impl Into<Arc<str>>) -> Self {
        Unreadable {
            found: found.into(),
        }
    }

    /// What the ledger found under the key, in words ("a list", "a string that is not a
    /// qupid record", "state code 9").
    pub fn found(&self) -> &str {
        &self.found
    }
}

/// Why a ledger refused an operation on a claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The token is not the key's current one (another holder took over, or the key was
    /// removed or released): the caller no longer holds the key and must stop.
    #[error("lease lost: the key is held under a newer token or no longer exists")]
    LeaseLost,
    /// The token is current but the key is not in a state that allows this operation.
    #[error("the key is {0}, which does not allow this operation")]
    WrongState(State),
    /// The ledger cannot read the key's record (see [`Unreadable`]), so it cannot tell
    /// whether the claim holds it; nothing was changed.
    #[error("{0}; nothing was changed")]
    Unreadable(Unreadable),
}

/// A started attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// When the lease runs out unless renewed.
    pub expires_at: Timestamp,
}

/// A completed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// A newer version was offered while the key was in flight, so the key does not block:
    /// the next poll processes it again.
    pub superseded: bool,
}

/// The answer to a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Attempts remain: the key is Queued again, still leased by the caller, to retry after a
    /// backoff.
    Retry {
        /// Attempts made so far.
        attempts: u32,
    },
    /// That was the last attempt: the key is Dead.
    Dead {
        /// Attempts made.
        attempts: u32,
    },
}

/// The answer to a `remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "state")]
pub enum Removed {
    /// The record is gone; the key is processable again.
    Removed,
    /// There was no record.
    NotFound,
    /// Refused: the key is leased (Queued or Running) and `force` was not set.
    Leased(State),
}

/// The answer to a `retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "state")]
pub enum Retried {
    /// The Dead record is gone; the key is processable again.
    Retried,
    /// There was no record.
    NotFound,
    /// Refused: the key is not Dead.
    NotDead(State),
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    /// Completed records removed.
    pub completed: u64,
    /// Dead records removed.
    pub dead: u64,
}

/// Everything a ledger knows about one key.
///
/// A ledger of another crate builds one with [`Record::new`] and sets the other fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Record {
    /// The key.
    pub key: Key,
    /// Its state.
    pub state: State,
    /// The version being processed, or the version that finished.
    pub version: Option<Version>,
    /// A newer version offered while the key was in flight.
    pub newer_version: Option<Version>,
    /// Attempts started so far.
    pub attempts: u32,
    /// How many times a lease on this key expired without an ending.
    pub abandoned: u32,
    /// The current (or last) fencing token.
    pub token: Token,
    /// When the lease runs out (Queued and Running only).
    pub expires_at: Option<Timestamp>,
    /// When the key finished (Completed and Dead only).
    pub finished_at: Option<Timestamp>,
    /// The error of the last failed attempt, if any.
    pub last_error: Option<String>,
    /// For Completed: a newer version was seen in flight, so this record does not block.
    pub superseded: bool,
}

impl Record {
    /// The record of `key` in `state` under `token`, with no version, no attempts, no times
    /// and no error; set the other fields as the ledger holds them.
    pub fn new(key: Key, state: State, token: Token) -> Record {
        Record {
            key,
            state,
            version: None,
            newer_version: None,
            attempts: 0,
            abandoned: 0,
            token,
            expires_at: None,
            finished_at: None,
            last_error: None,
            superseded: false,
        }
    }
}

/// Counts of records per state, and of the leases among them that expired. Build one from
/// [`Stats::default`] and set its fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Records Queued.
    pub queued: u64,
    /// Records Running.
    pub running: u64,
    /// Records Completed.
    pub completed: u64,
    /// Records Dead.
    pub dead: u64,
    /// Of the queued and running records, those whose lease has expired by the ledger's
    /// clock: held by nobody alive (their holder crashed, hung or stopped without releasing
    /// them), so the next offer of the key takes it over. A subset of `queued + running`,
    /// not a state of its own: [`total`](Stats::total) does not add it.
    #[serde(default)]
    pub expired: u64,
}

impl Stats {
    /// The count for `state`.
    pub fn count(&self, state: State) -> u64 {
        match state {
            State::Queued => self.queued,
            State::Running => self.running,
            State::Completed => self.completed,
            State::Dead => self.dead,
        }
    }

    /// All records: the sum of the four states ([`expired`](Stats::expired) is counted in
    /// `queued` and `running` already).
    pub fn total(&self) -> u64 {
        self.queued + self.running + self.completed + self.dead
    }

    pub(crate) fn count_mut(&mut self, state: State) -> &mut u64 {
        match state {
            State::Queued => &mut self.queued,
            State::Running => &mut self.running,
            State::Completed => &mut self.completed,
            State::Dead => &mut self.dead,
        }
    }
}

/// Which records to `list`: one state, in key order, one page at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// The state to list.
    pub state: State,
    /// Start after this key (the `next` of the previous page).
    pub after: Option<Key>,
    /// At most this many records (at least 1 is used).
    pub limit: usize,
}

impl ListQuery {
    /// The first page of up to 100 records in `state`.
    pub fn new(state: State) -> Self {
        ListQuery {
            state,
            after: None,
            limit: 100,
        }
    }

    /// The same query with another page size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The same query starting after `key`.
    pub fn after(mut self, key: Key) -> Self {
        self.after = Some(key);
        self
    }
}

/// One page of a `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The records, in key order.
    pub records: Vec<Record>,
    /// The cursor for the next page, or `None` if this was the last.
    pub next: Option<Key>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_fill_what_they_are_given_and_nothing_else() {
        let key = Key::new("k").expect("valid");
        let r = Record::new(key.clone(), State::Dead, Token::new(7));
        assert_eq!((&r.key, r.state, r.token.get()), (&key, State::Dead, 7));
        assert_eq!(
            (r.version, r.newer_version, r.last_error),
            (None, None, None)
        );
        assert_eq!((r.attempts, r.abandoned, r.superseded), (0, 0, false));
        assert_eq!((r.expires_at, r.finished_at), (None, None));
        let l = Lease::new(Token::new(3), Timestamp::from_millis(9), 2);
        assert_eq!(
            (l.token, l.expires_at.as_millis(), l.attempts),
            (Token(3), 9, 2)
        );
    }

    #[test]
    fn only_an_ordered_offer_older_than_an_ordered_accepted_version_is_outdated() {
        let o = |n| Some(Version::ordered(n));
        let opaque = Some(Version::new("etag").expect("valid"));
        let cases = [
            // (offered, version, newer, outdated)
            (o(1), o(2), None, true),
            (o(2), o(2), None, false),
            (o(3), o(2), None, false),
            (o(0), o(u64::MAX), None, true),
            (o(9), o(10), None, true),
            (o(3), o(2), o(5), true),
            (o(2), o(2), o(5), true),
            (o(5), o(2), o(5), false),
            (o(6), o(2), o(5), false),
            (o(3), opaque.clone(), o(5), true),
            (o(6), opaque.clone(), o(5), false),
            (o(1), o(2), opaque.clone(), true),
            (o(1), opaque.clone(), None, false),
            (o(1), None, None, false),
            (opaque.clone(), o(2), o(5), false),
            (None, o(2), o(5), false),
        ];
        for (offered, version, newer, want) in cases {
            assert_eq!(
                is_outdated(offered.as_ref(), version.as_ref(), newer.as_ref()),
                want,
                "{offered:?} against {version:?}, newer {newer:?}"
            );
        }
    }
}
