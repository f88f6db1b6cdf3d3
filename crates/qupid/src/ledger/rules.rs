//! The state machine as one pure function: [`decide`] takes a key's record (or its absence),
//! an event and the policy, and says what to write and what to answer.
//!
//! It is the rule book of every ledger. The memory and SQLite ledgers apply it to the record
//! they read; the Redis scripts and PostgreSQL statements restate it on the server, for one
//! round trip per batch, and the conformance suite checks them against it, row by row, with
//! a table generated from this function (every state × event × policy setting × lease
//! timing); the testkit's reference model is this function too. Changing a transition means
//! changing [`decide`] (and a row of the table in the [module docs](super)); the table test
//! then shows which server-side restatements disagree.
//!
//! ```
//! use qupid::clock::Timestamp;
//! use qupid::ledger::rules::{decide, Answer, Event, Facts, Write};
//! use qupid::ledger::{State, Token};
//! use qupid::Policy;
//!
//! let policy = Policy::default();
//! let now = Timestamp::from_millis(1_000);
//! // An absent key offered: a new record, Queued under a new lease.
//! let d = decide(None, &Event::Offer { version: None, start: false }, &policy, now);
//! let Write::Put { record, new_token: true } = d.write else { panic!("{:?}", d.write) };
//! assert_eq!(record.state, State::Queued);
//! assert_eq!(d.answer, Answer::Accepted { expires_at: now.plus(policy.lease), attempts: 0 });
//!
//! // Started with the record's token: Running, attempt 1.
//! let record = Facts { token: Token::new(7), ..record };
//! let d = decide(Some(&record), &Event::Start { token: Token::new(7) }, &policy, now);
//! assert!(matches!(d.write, Write::Put { record: Facts { state: State::Running, attempts: 1, .. }, .. }));
//! ```

use crate::clock::Timestamp;
use crate::key::Version;
use crate::policy::{NewerVersions, Policy};

use super::types::{
    is_outdated, Done, Failed, Lease, Offered, Refused, Removed, Retried, Started, State, Token,
};

/// The largest attempt and abandonment count a record holds: counts saturate there, and
/// [`Policy::validate`] refuses a `max_attempts` or `crash_cap` above it. Every ledger
/// stores counts of at least this range.
pub const MAX_COUNT: u32 = u16::MAX as u32;

/// The error a key is left with when its lease expired too many times
/// ([`Policy::crash_cap`]).
pub const ABANDONED: &str = "abandoned";

/// A key's record as the rules see it: everything but the key. Borrowed, so that reading a
/// stored record into it copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts<'a> {
    /// The state.
    pub state: State,
    /// Completed with a newer version seen in flight: does not block.
    pub superseded: bool,
    /// Attempts started so far (at most [`MAX_COUNT`]).
    pub attempts: u32,
    /// Lease expiries without an ending so far (at most [`MAX_COUNT`]).
    pub abandoned: u32,
    /// The current (or last) fencing token.
    pub token: Token,
    /// The lease's expiry while Queued or Running; the finish time once Completed or Dead.
    pub at: Timestamp,
    /// The version being processed, or the version that finished.
    pub version: Option<&'a Version>,
    /// A newer version offered while in flight.
    pub newer: Option<&'a Version>,
    /// The error of the last failed attempt (or [`ABANDONED`]).
    pub error: Option<&'a str>,
}

/// What happens to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// `offer` of the key at `version`; with `start`, `offer_and_start`.
    Offer {
        /// The offered version.
        version: Option<&'a Version>,
        /// Start the attempt at once where the offer is accepted.
        start: bool,
    },
    /// `start` under `token`.
    Start {
        /// The claim's token.
        token: Token,
    },
    /// `renew` under `token`.
    Renew {
        /// The claim's token.
        token: Token,
    },
    /// `complete` under `token`.
    Complete {
        /// The claim's token.
        token: Token,
    },
    /// `fail` under `token`, with the attempt's error.
    Fail {
        /// The claim's token.
        token: Token,
        /// The error to keep on the record.
        error: &'a str,
    },
    /// `release` under `token`.
    Release {
        /// The claim's token.
        token: Token,
    },
    /// `remove`; with `force`, of a leased key too.
    Remove {
        /// Remove a Queued or Running key as well.
        force: bool,
    },
    /// `retry` of a Dead key.
    Retry,
}

/// What to write for the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write<'a> {
    /// Nothing changes.
    Keep,
    /// The record becomes `record`. With `new_token`, under a new lease: the ledger issues
    /// the next token and stores it in place of `record.token`.
    Put {
        /// The record to store.
        record: Facts<'a>,
        /// Whether the ledger issues a new token for it.
        new_token: bool,
    },
    /// The record is deleted: the key is absent again.
    Delete,
}

/// What the ledger answers for the key. An accepted offer's token is the new one the
/// [`Write::Put`] asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The offer is accepted under a new lease (its token is the new one).
    Accepted {
        /// When the lease runs out.
        expires_at: Timestamp,
        /// Attempts made so far (counting a started one).
        attempts: u32,
    },
    /// The offer is a duplicate of the key in this state.
    Duplicate(State),
    /// The offered version is older than one accepted; the key is in this state.
    Outdated(State),
    /// Started.
    Started(Started),
    /// Renewed until then.
    Renewed(Timestamp),
    /// Completed.
    Done(Done),
    /// Failed: retry or dead.
    Failed(Failed),
    /// Released.
    Released,
    /// The claim is refused.
    Refused(Refused),
    /// The answer to `remove`.
    Removed(Removed),
    /// The answer to `retry`.
    Retried(Retried),
}

/// The rules' verdict: what to write and what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    /// What to write for the key.
    pub write: Write<'a>,
    /// What to answer for it.
    pub answer: Answer,
}

impl<'a> Decision<'a> {
    fn keep(answer: Answer) -> Self {
        Decision {
            write: Write::Keep,
            answer,
        }
    }

    fn put(record: Facts<'a>, answer: Answer) -> Self {
        Decision {
            write: Write::Put {
                record,
                new_token: false,
            },
            answer,
        }
    }

    fn refused(refused: Refused) -> Self {
        Decision::keep(Answer::Refused(refused))
    }
}

/// The state machine: what `event` does to a key whose record is `before` (`None`: absent)
/// under `policy`, at `now` by the ledger's clock. See the [module docs](self) and the
/// table in the [ledger docs](super).
pub fn decide<'a>(
    before: Option<&Facts<'a>>,
    event: &Event<'a>,
    policy: &Policy,
    now: Timestamp,
) -> Decision<'a> {
    match *event {
        Event::Offer { version, start } => offer(before, version, start, policy, now),
        Event::Remove { force } => match before {
            None => Decision::keep(Answer::Removed(Removed::NotFound)),
            Some(r) if r.state.is_leased() && !force => {
                Decision::keep(Answer::Removed(Removed::Leased(r.state)))
            }
            Some(_) => Decision {
                write: Write::Delete,
                answer: Answer::Removed(Removed::Removed),
            },
        },
        Event::Retry => match before {
            None => Decision::keep(Answer::Retried(Retried::NotFound)),
            Some(r) if r.state != State::Dead => {
                Decision::keep(Answer::Retried(Retried::NotDead(r.state)))
            }
            Some(_) => Decision {
                write: Write::Delete,
                answer: Answer::Retried(Retried::Retried),
            },
        },
        Event::Start { token }
        | Event::Renew { token }
        | Event::Complete { token }
        | Event::Fail { token, .. }
        | Event::Release { token } => match before {
            Some(r) if r.token == token => claimed(r, event, policy, now),
            _ => Decision::refused(Refused::LeaseLost),
        },
    }
}

/// A transition under the record's own token.
fn claimed<'a>(r: &Facts<'a>, event: &Event<'a>, policy: &Policy, now: Timestamp) -> Decision<'a> {
    let allowed = match event {
        Event::Start { .. } => r.state == State::Queued,
        Event::Complete { .. } | Event::Fail { .. } => r.state == State::Running,
        _ => r.state.is_leased(),
    };
    if !allowed {
        return Decision::refused(Refused::WrongState(r.state));
    }
    let mut after = *r;
    match *event {
        Event::Start { .. } => {
            after.state = State::Running;
            after.attempts = count_up(r.attempts);
            after.at = now.plus(policy.lease);
            Decision::put(
                after,
                Answer::Started(Started {
                    attempt: after.attempts,
                    expires_at: after.at,
                }),
            )
        }
        Event::Renew { .. } => {
            after.at = now.plus(policy.lease);
            Decision::put(after, Answer::Renewed(after.at))
        }
        Event::Complete { .. } => {
            let superseded = r.newer.is_some_and(|n| r.version != Some(n));
            after.state = State::Completed;
            after.superseded = superseded;
            after.newer = None;
            after.at = now;
            Decision::put(after, Answer::Done(Done { superseded }))
        }
        Event::Fail { error, .. } => {
            after.error = Some(error);
            let attempts = r.attempts;
            if attempts >= policy.max_attempts.min(MAX_COUNT) {
                after.state = State::Dead;
                after.newer = None;
                after.at = now;
                Decision::put(after, Answer::Failed(Failed::Dead { attempts }))
            } else {
                after.state = State::Queued;
                after.at = now.plus(policy.lease);
                Decision::put(after, Answer::Failed(Failed::Retry { attempts }))
            }
        }
        Event::Release { .. } => Decision {
            write: Write::Delete,
            answer: Answer::Released,
        },
        Event::Offer { .. } | Event::Remove { .. } | Event::Retry => {
            unreachable!("decide passes only claims here")
        }
    }
}

fn offer<'a>(
    before: Option<&Facts<'a>>,
    version: Option<&'a Version>,
    start: bool,
    policy: &Policy,
    now: Timestamp,
) -> Decision<'a> {
    let lease_until = now.plus(policy.lease);
    let Some(r) = before else {
        return fresh(version, start, lease_until);
    };
    // Whatever the state, the lease and the policy: nothing changes.
    if is_outdated(version, r.version, r.newer) {
        return Decision::keep(Answer::Outdated(r.state));
    }
    let mut r = *r;
    if r.state.is_leased() {
        if now < r.at {
            let remember = policy.newer_versions == NewerVersions::Remember
                && version.is_some()
                && version != r.version
                && version != r.newer;
            let answer = Answer::Duplicate(r.state);
            if remember {
                r.newer = version;
                return Decision::put(r, answer);
            }
            return Decision::keep(answer);
        }
        // The holder's lease expired without an ending: it is abandoned.
        r.abandoned = count_up(r.abandoned);
        if policy.crash_cap == 0 || r.abandoned < policy.crash_cap {
            // Taken over: a new lease on the same record, its attempts kept.
            r.state = if start { State::Running } else { State::Queued };
            if start {
                r.attempts = count_up(r.attempts);
            }
            r.at = lease_until;
            r.version = version;
            r.newer = None;
            let answer = Answer::Accepted {
                expires_at: lease_until,
                attempts: r.attempts,
            };
            return Decision {
                write: Write::Put {
                    record: r,
                    new_token: true,
                },
                answer,
            };
        }
        // Abandoned too often: the key dies, then meets the rules of a finished key.
        r.state = State::Dead;
        r.at = now;
        r.error = Some(ABANDONED);
        r.newer = None;
        if finished_blocks(&r, version, policy, now) {
            return Decision::put(r, Answer::Duplicate(State::Dead));
        }
        return fresh(version, start, lease_until);
    }
    if finished_blocks(&r, version, policy, now) {
        return Decision::keep(Answer::Duplicate(r.state));
    }
    fresh(version, start, lease_until)
}

/// Whether a finished record blocks an offer of `version`: the same content (no version, or
/// the record's own), not superseded, and its state blocks at `now`.
fn finished_blocks(
    r: &Facts<'_>,
    version: Option<&Version>,
    policy: &Policy,
    now: Timestamp,
) -> bool {
    let changed = version.is_some() && version != r.version;
    !changed && !r.superseded && policy.blocking(r.state).blocks(r.at, now)
}

/// A new record under a new lease: Queued, or Running its first attempt with `start`.
fn fresh(version: Option<&Version>, start: bool, lease_until: Timestamp) -> Decision<'_> {
    let attempts = u32::from(start);
    Decision {
        write: Write::Put {
            record: Facts {
                state: if start { State::Running } else { State::Queued },
                superseded: false,
                attempts,
                abandoned: 0,
                token: Token(0),
                at: lease_until,
                version,
                newer: None,
                error: None,
            },
            new_token: true,
        },
        answer: Answer::Accepted {
            expires_at: lease_until,
            attempts,
        },
    }
}

/// A count one higher, saturating at [`MAX_COUNT`].
fn count_up(n: u32) -> u32 {
    n.saturating_add(1).min(MAX_COUNT)
}

/// The answer as each [`Ledger`](super::Ledger) method types it. Each takes the answers
/// [`decide`] gives to its event; any other is a bug in the rules.
impl Answer {
    /// The answer to an offer; `token` is the one the ledger issued if the offer was
    /// accepted.
    pub fn into_offered(self, token: Token) -> Offered {
        match self {
            Answer::Accepted {
                expires_at,
                attempts,
            } => Offered::Accepted(Lease {
                token,
                expires_at,
                attempts,
            }),
            Answer::Duplicate(state) => Offered::Duplicate(state),
            Answer::Outdated(state) => Offered::Outdated(state),
            other => unexpected("an offer", &other),
        }
    }

    /// The answer to `start`.
    pub fn into_started(self) -> Result<Started, Refused> {
        match self {
            Answer::Started(started) => Ok(started),
            Answer::Refused(refused) => Err(refused),
            other => unexpected("start", &other),
        }
    }

    /// The answer to `renew`.
    pub fn into_renewed(self) -> Result<Timestamp, Refused> {
        match self {
            Answer::Renewed(until) => Ok(until),
            Answer::Refused(refused) => Err(refused),
            other => unexpected("renew", &other),
        }
    }

    /// The answer to `complete`.
    pub fn into_done(self) -> Result<Done, Refused> {
        match self {
            Answer::Done(done) => Ok(done),
            Answer::Refused(refused) => Err(refused),
            other => unexpected("complete", &other),
        }
    }

    /// The answer to `fail`.
    pub fn into_failed(self) -> Result<Failed, Refused> {
        match self {
            Answer::Failed(failed) => Ok(failed),
            Answer::Refused(refused) => Err(refused),
            other => unexpected("fail", &other),
        }
    }

    /// The answer to `release`.
    pub fn into_released(self) -> Result<(), Refused> {
        match self {
            Answer::Released => Ok(()),
            Answer::Refused(refused) => Err(refused),
            other => unexpected("release", &other),
        }
    }

    /// The answer to `remove`.
    pub fn into_removed(self) -> Removed {
        match self {
            Answer::Removed(removed) => removed,
            other => unexpected("remove", &other),
        }
    }

    /// The answer to `retry`.
    pub fn into_retried(self) -> Retried {
        match self {
            Answer::Retried(retried) => retried,
            other => unexpected("retry", &other),
        }
    }
}

#[cold]
fn unexpected(call: &str, answer: &Answer) -> ! {
    unreachable!("the rules answered {call} with {answer:?}")
}
