//! Ledgers: where each key's state lives.
//!
//! A [`Ledger`] stores keys and states, never payloads. Every ledger implements the same
//! state machine, written once as a pure function, [`rules::decide`]: the memory and SQLite
//! ledgers apply it to the records they read, Redis and PostgreSQL restate it on the server
//! (one script or statement per batch), and one conformance suite (the `qupid-testkit`
//! crate) checks every ledger against it, with a table of every state × event × policy
//! setting × lease timing. In short:
//!
//! | from | event | to | notes |
//! |---|---|---|---|
//! | absent | offer | Queued(lease) | returns [`Offered::Accepted`] |
//! | any, lease valid or expired | offer of an ordered version older than the newest accepted | unchanged | returns [`Offered::Outdated`], whatever the policy; see [ordered versions](#ordered-versions) |
//! | Completed(v) / Dead(v) | offer with version w ≠ v | Queued(lease) | content changed: processed again (unless outdated) |
//! | Completed / Dead, blocking | offer otherwise | unchanged | returns [`Offered::Duplicate`] |
//! | Completed / Dead, not blocking | offer | Queued(lease) | window passed, state not blocking, or superseded |
//! | Queued / Running, lease valid | offer | unchanged | `Duplicate(state)`; a newer version is remembered |
//! | Queued / Running, lease expired | offer (not outdated) | Queued(new lease, new token) | old holder fenced out; counts toward the crash cap |
//! | Queued | start(token) | Running(attempt + 1) | |
//! | as offer | offer-and-start | Running(attempt + 1) where offer would queue | [`Ledger::offer_and_start`]: both steps in one |
//! | Queued / Running | renew(token) | same, later expiry | |
//! | Running | complete(token) | Completed(version, at) | superseded if a newer version was remembered |
//! | Running | fail(token), attempts < max | Queued (same lease holder) | retried after a backoff |
//! | Running | fail(token), attempts ≥ max | Dead(error, at) | |
//! | Queued / Running | release(token) | absent | polled again next time |
//! | Completed / Dead | remove | absent | |
//! | Queued / Running | remove | refused unless forced | forced: absent, holder fenced out |
//! | Dead | retry | absent | |
//! | Completed / Dead | purge | absent | by age and/or count |
//!
//! An operation whose token is not the key's current one is refused with
//! [`Refused::LeaseLost`] and changes nothing. An operation with the current token succeeds
//! even after the lease's expiry time, as long as nobody else has claimed the key since:
//! expiry lets the *next offer* through, it does not by itself revoke the lease.
//!
//! # Ordered versions
//!
//! A [`Version`](crate::Version) is opaque or [ordered](crate::Version::ordered). Opaque
//! versions only compare equal or different. When the offered version and a version the
//! ledger has accepted for the key are *both* ordered, the ledger also tells older from
//! newer: an offer older than the key's newest accepted version is refused as
//! [`Offered::Outdated`] (with the key's current state), and nothing changes, whatever the
//! state, the lease, the blocking policy or [`NewerVersions`](crate::NewerVersions) say.
//! The key's accepted versions are its record's version and, while it is in flight, the
//! newer version remembered for it; the newest is the greatest of those that are ordered.
//!
//! | offered version w | answer |
//! |---|---|
//! | none, or opaque | the rules above, unchanged |
//! | ordered, older than the record's version or than the remembered newer version (each counted only if ordered) | `Outdated(state)`: nothing changes — no takeover of an expired lease (no new token, no abandonment counted), no new attempt at a finished key, no version remembered |
//! | ordered, otherwise | the rules above: the record's own version is the same version (a duplicate while it blocks), any other is a different version (a finished key is processed again, an in-flight one remembers it) |
//!
//! So while a key is in flight with a newer version remembered, an offer of any version
//! older than that one — the running version itself included — is outdated: the remembered
//! version is what the key is processed at next, and it is never replaced by an older one
//! (an opaque offer still replaces it, as before). Once the key completes or goes Dead, the
//! version it finished with is the one it keeps: a newer version remembered meanwhile makes
//! a completed key superseded (processable again), and is not kept.
//!
//! [`Ledger::offer_and_start`] answers exactly as `offer` does.
//!
//! # Unreadable records
//!
//! A shared ledger can hold, under one key, something it cannot read: a value another
//! program wrote into the namespace, or a record damaged by hand or by a bug. That is an
//! answer for that key, never a failed batch: [`Offered::Unreadable`] from `offer` and
//! `offer_and_start`, [`Refused::Unreadable`] from `start`, `renew`, `complete`, `fail` and
//! `release`, each saying what was found ([`Unreadable::found`]). Nothing is written for
//! that key, and every other item of the batch is answered as usual. The key stays so until
//! someone repairs it: [`remove`](LedgerAdmin::remove) with `force` deletes whatever is there
//! (the CLI's `qupid remove --force KEY`). The other administration calls (`get`, `list`,
//! `retry`, `purge`, and `remove` without `force`) fail with
//! [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) naming the key, since they cannot say
//! what state it is in. Damage to the whole namespace (its token counter, an index, a schema
//! or layout of a newer qupid) fails every call with `Corrupt`. The memory ledger cannot
//! hold an unreadable record.
//!
//! # Read-only ledgers
//!
//! Looking at a ledger must not change it: a tool pointed at the wrong file or namespace
//! should say so, not make a ledger there. Every ledger opens read-only —
//! [`AnyLedger::open_read_only`], `SqliteLedger::builder(path).read_only(true)`,
//! `PostgresLedger::builder(url, ns).read_only(true)`,
//! `RedisLedger::builder(url, ns).read_only(true)`, [`MemoryLedger::read_only`] — and then:
//!
//! - **opening writes nothing**: no SQLite file, schema, migration or journal-mode switch; no
//!   PostgreSQL schema or upgrade (and the server refuses writes on its connections); no Redis
//!   key or layout migration;
//! - **where there is no ledger** (no file, an empty file or another program's SQLite
//!   database; no schema for the namespace; no key of the namespace), opening fails with
//!   [`ErrorKind::NotFound`](crate::ErrorKind::NotFound), where a read-write open would have
//!   made one. A file that is not SQLite at all is still
//!   [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt);
//! - **a ledger of an older schema** (none yet: each ledger is at its first) will be read
//!   as it is where the versions allow it, and refused with
//!   [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) where only a migration (a write)
//!   makes it readable;
//! - **every write method** (`offer`, `offer_and_start`, `start`, `renew`, `complete`,
//!   `fail`, `release`, `remove`, `retry`, `purge`) answers
//!   [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) and changes nothing, empty batches
//!   included; `get`, `list`, `stats` and `now` work as usual and see what writers commit.
//!
//! `ReadOnly` is its own kind, not [`Config`](crate::ErrorKind::Config): the settings are
//! fine, the call is not one this handle makes, and a caller (a pipeline given a read-only
//! ledger by mistake) can tell that apart; like `Config`, it is not transient.
//!
//! # Two traits
//!
//! [`Ledger`] is the hot path a [`Queue`](crate::Queue) calls for every key: `offer` (and
//! `offer_and_start`), `start`, `renew`, `complete`, `fail`, `release`. [`LedgerAdmin`] is
//! the rest: `get`, `list`, `stats`, `now` and the repairs `remove`, `retry`, `purge`, for
//! the [`Pipeline`](crate::Pipeline) (which purges), the CLI, the dashboard and tests. A
//! wrapper that changes the hot path (to inject faults, to count calls) writes its changes
//! in `Ledger`; under a `Queue` that is all it needs, and under a `Pipeline` its
//! `LedgerAdmin` forwards the seven reads and repairs as they are.
//!
//! # Generic, not object-safe
//!
//! [`Ledger`]'s methods return `impl Future + Send`, so the trait is used through generics
//! (`Queue<L: Ledger>`): each call is statically dispatched and no future is boxed on the hot
//! path. A ledger chosen at run time (from a URL in configuration) is an enum over the
//! backends, not a `Box<dyn Ledger>`.

mod any;
mod memory;
mod namespace;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod rules;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
mod types;

use std::future::Future;
use std::sync::Arc;

#[cfg(feature = "postgres")]
pub use self::postgres::{PostgresBuilder, PostgresLedger};
#[cfg(feature = "redis")]
pub use self::redis::{RedisBuilder, RedisLedger};
pub use any::AnyLedger;
pub use memory::MemoryLedger;

pub use namespace::{check_namespace, DEFAULT_NAMESPACE, MAX_NAMESPACE_LEN};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteBuilder, SqliteLedger};
pub use types::{
    Claim, Done, Failed, Failure, Lease, ListQuery, Offered, Page, Purged, Record, Refused,
    Removed, Retried, Started, State, Stats, Token, Unreadable,
};

use crate::clock::Timestamp;
use crate::error::Result;
use crate::key::{Key, Offer};
use crate::policy::{Policy, Retention};

/// The error every write method of a read-only ledger answers: `ledger` names the ledger
/// (its file, URL or namespace), `doing` the refused call.
pub(crate) fn read_only_error(ledger: &str, doing: &str) -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::ReadOnly,
        format!("{ledger} was opened read-only: {doing} would write to it, so it was refused"),
    )
}

/// The store of each key's state, shared by every worker (and every process, for a shared
/// ledger) of one pipeline.
///
/// # Contract
///
/// Every implementation follows the state machine in the [module docs](self), and:
///
/// - **No double processing while a lease is valid**: of any number of concurrent offers of
///   one key, from any number of processes, at most one is [`Offered::Accepted`] until that
///   lease expires or is released.
/// - **Fencing**: `start`, `renew`, `complete`, `fail` and `release` with a token that is not
///   the key's current one change nothing and answer [`Refused::LeaseLost`].
/// - **Batches**: each method takes a slice and answers one outcome per item, in order. Items
///   are independent: one refused item does not affect the others, nor does a key whose
///   record the ledger cannot read (see [Unreadable records](self#unreadable-records)),
///   which is answered as such and left untouched. A ledger error (`Err`)
///   means the whole call may or may not have been applied; retrying it is safe, because
///   every transition is guarded by state and token.
/// - **Time**: leases expire by the ledger's own clock ([`now`](LedgerAdmin::now)).
/// - **Policy**: decisions that depend on policy take it as an argument, so a ledger holds no
///   configuration beyond where its data lives, and tools like the CLI can open any ledger.
/// - **Read-only**: a ledger opened [read-only](self#read-only-ledgers) answers
///   [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) from every method that writes
///   (`offer` to `purge`), changing nothing, and reads as usual.
///
/// # Cancel safety
///
/// Dropping a future returned by a ledger method leaves each item of the batch either fully
/// applied or not applied at all; which one is not known to the caller.
pub trait Ledger: std::fmt::Debug + Send + Sync + 'static {
    /// Offers keys for processing. An accepted key is Queued under a new lease.
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails (unreachable, corrupt).
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) from a
    /// [read-only](self#read-only-ledgers) ledger.
    fn offer(
        &self,
        policy: &Policy,
        offers: &[Offer],
    ) -> impl Future<Output = Result<Vec<Offered>>> + Send;

    /// Starts an attempt on Queued keys: they become Running and their attempt count grows.
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails.
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) from a
    /// [read-only](self#read-only-ledgers) ledger.
    fn start(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> impl Future<Output = Result<Vec<Result<Started, Refused>>>> + Send;

    /// Offers keys and starts an attempt on each one accepted, in one step: where
    /// [`offer`](Ledger::offer) would make a key Queued, it becomes Running with its attempt
    /// count grown by one, as if [`start`](Ledger::start) had followed at once. Duplicates
    /// are answered exactly as by `offer` (and a newer version is remembered the same way).
    ///
    /// An accepted key's [`Lease::attempts`] is then the attempt just started (from 1), not
    /// the attempts made before it.
    ///
    /// A queue that hands each accepted entry straight to a worker (a pipeline) uses this to
    /// save one transition per key: one ledger write instead of two, and no wait between
    /// acceptance and work. The default implementation ([`offer_then_start`]) calls `offer`,
    /// then `start` on the accepted keys; every ledger of this crate does both in one atomic
    /// step.
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails. With the default implementation, a failure between
    /// the two steps leaves the accepted keys Queued under leases nobody holds: they are
    /// offered again once those expire.
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) from a
    /// [read-only](self#read-only-ledgers) ledger.
    fn offer_and_start(
        &self,
        policy: &Policy,
        offers: &[Offer],
    ) -> impl Future<Output = Result<Vec<Offered>>> + Send {
        offer_then_start(self, policy, offers)
    }

    /// Extends leases by `policy.lease` from now. Answers the new expiry.
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails.
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) from a
    /// [read-only](self#read-only-ledgers) ledger.
    fn renew(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> impl Future<Output = Result<Vec<Result<Timestamp, Refused>>>> + Send;

    /// Marks Running keys Completed.
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails.
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) from a
    /// [read-only](self#read-only-ledgers) ledger.
    fn complete(
        &self,
        claims: &[Claim],
    ) -> impl Future<Output = Result<Vec<Result<Done, Refused>>>> + Send;

    /// Records failed attempts: Queued again while attempts remain, Dead after the last.
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails.
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) from a
    /// [read-only](self#read-only-ledgers) ledger.
    fn fail(
        &self,
        policy: &Policy,
        failures: &[Failure],
    ) -> impl Future<Output = Result<Vec<Result<Failed, Refused>>>> + Send;

    /// Gives keys up without an ending: their records are removed, so the next offer of the
    /// key is accepted (graceful stop).
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails.
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) from a
    /// [read-only](self#read-only-ledgers) ledger.
    fn release(
        &self,
        claims: &[Claim],
    ) -> impl Future<Output = Result<Vec<Result<(), Refused>>>> + Send;

    /// Whether the ledger groups concurrent calls by itself, or each call costs too little to
    /// be worth grouping (an in-process ledger). When `false` (the default), a queue groups
    /// the `start`/`complete`/`fail`/`release` calls of its concurrent jobs into batches in a
    /// background task, trading a hop between tasks for fewer round trips; when `true`, jobs
    /// call the ledger directly.
    fn groups_calls(&self) -> bool {
        false
    }
}

/// The administration of a ledger: its records read one by one or a page at a time, their
/// counts, its clock, and the repairs (`remove`, `retry`, `purge`).
///
/// Kept apart from [`Ledger`], the hot path a [`Queue`](crate::Queue) needs, so that the
/// hot path is small and a wrapper of it (a fault injector, a metrics layer) changes it in
/// one place. A [`Pipeline`](crate::Pipeline) needs both (it purges by its policy's
/// retention); so do the CLI, the dashboard and the conformance suite. Every built-in
/// ledger implements both. See [Two traits](self#two-traits).
///
/// The [contract](Ledger#contract) of `Ledger` holds here too: batches answer one outcome
/// per item, in order; a read-only ledger refuses `remove`, `retry` and `purge` with
/// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly).
pub trait LedgerAdmin: Ledger {
    /// Removes records so their keys are processable again. A leased key is refused unless
    /// `force` is set; forcing fences its holder out.
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails.
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) from a
    /// [read-only](self#read-only-ledgers) ledger.
    fn remove(
        &self,
        keys: &[Key],
        force: bool,
    ) -> impl Future<Output = Result<Vec<Removed>>> + Send;

    /// Removes Dead records so their keys are processable again.
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails.
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) from a
    /// [read-only](self#read-only-ledgers) ledger.
    fn retry(&self, keys: &[Key]) -> impl Future<Output = Result<Vec<Retried>>> + Send;

    /// Removes finished records that `retention` no longer keeps.
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails.
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) from a
    /// [read-only](self#read-only-ledgers) ledger.
    fn purge(&self, retention: &Retention) -> impl Future<Output = Result<Purged>> + Send;

    /// The record of `key`, if it has one.
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails.
    fn get(&self, key: &Key) -> impl Future<Output = Result<Option<Record>>> + Send;

    /// One page of the records in a state, in key order.
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails.
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page>> + Send;

    /// Counts of records per state, and how many of the leased ones have expired
    /// ([`Stats::expired`]). The per-state counts agree with [`list`](LedgerAdmin::list).
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails.
    fn stats(&self) -> impl Future<Output = Result<Stats>> + Send;

    /// The ledger's current time, the clock its leases expire by.
    ///
    /// # Errors
    ///
    /// Only when the ledger itself fails.
    fn now(&self) -> impl Future<Output = Result<Timestamp>> + Send;
}

/// [`Ledger::offer_and_start`] in two steps, as the trait's default does it: `offer`, then
/// `start` of the accepted keys. For a ledger (or a wrapper) that wants the default's answers
/// while deciding itself what counts as one call: the built-in ledgers do both in one step.
///
/// # Errors
///
/// Those of either step. A failure of the second leaves the accepted keys Queued under
/// leases nobody holds: they are offered again once those expire.
pub async fn offer_then_start<L: Ledger + ?Sized>(
    ledger: &L,
    policy: &Policy,
    offers: &[Offer],
) -> Result<Vec<Offered>> {
    let mut out = ledger.offer(policy, offers).await?;
    let (claims, at): (Vec<Claim>, Vec<usize>) = out
        .iter()
        .zip(offers)
        .enumerate()
        .filter_map(|(i, (o, offer))| {
            let lease = o.lease()?;
            let claim = Claim {
                key: offer.key.clone(),
                token: lease.token,
            };
            Some((claim, i))
        })
        .unzip();
    if claims.is_empty() {
        return Ok(out);
    }
    let started = ledger.start(policy, &claims).await?;
    // A key offered twice in the batch: its second copy saw it Queued, but it is
    // Running now, as a one-step ledger answers.
    let keys: std::collections::HashSet<&Key> = claims.iter().map(|c| &c.key).collect();
    for (o, offer) in out.iter_mut().zip(offers) {
        if keys.contains(&offer.key) {
            match o {
                Offered::Duplicate(s @ State::Queued) | Offered::Outdated(s @ State::Queued) => {
                    *s = State::Running;
                }
                _ => {}
            }
        }
    }
    for (i, s) in at.into_iter().zip(started) {
        let Offered::Accepted(lease) = out[i] else {
            continue;
        };
        out[i] = match s {
            Ok(s) => Offered::Accepted(Lease {
                token: lease.token,
                expires_at: s.expires_at,
                attempts: s.attempt,
            }),
            // Taken over between the two steps (possible only after an expiry as
            // short as the gap): report what holds the key now.
            Err(Refused::WrongState(state)) => Offered::Duplicate(state),
            Err(Refused::LeaseLost) => Offered::Duplicate(State::Queued),
            // Damaged between the two steps: what is there now is unreadable.
            Err(Refused::Unreadable(u)) => Offered::Unreadable(u),
        };
    }
    Ok(out)
}

impl<L: Ledger> Ledger for Arc<L> {
    fn offer(
        &self,
        policy: &Policy,
        offers: &[Offer],
    ) -> impl Future<Output = Result<Vec<Offered>>> + Send {
        (**self).offer(policy, offers)
    }
    fn start(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> impl Future<Output = Result<Vec<Result<Started, Refused>>>> + Send {
        (**self).start(policy, claims)
    }
    fn offer_and_start(
        &self,
        policy: &Policy,
        offers: &[Offer],
    ) -> impl Future<Output = Result<Vec<Offered>>> + Send {
        (**self).offer_and_start(policy, offers)
    }
    fn renew(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> impl Future<Output = Result<Vec<Result<Timestamp, Refused>>>> + Send {
        (**self).renew(policy, claims)
    }
    fn complete(
        &self,
        claims: &[Claim],
    ) -> impl Future<Output = Result<Vec<Result<Done, Refused>>>> + Send {
        (**self).complete(claims)
    }
    fn fail(
        &self,
        policy: &Policy,
        failures: &[Failure],
    ) -> impl Future<Output = Result<Vec<Result<Failed, Refused>>>> + Send {
        (**self).fail(policy, failures)
    }
    fn release(
        &self,
        claims: &[Claim],
    ) -> impl Future<Output = Result<Vec<Result<(), Refused>>>> + Send {
        (**self).release(claims)
    }
    fn groups_calls(&self) -> bool {
        (**self).groups_calls()
    }
}

impl<L: LedgerAdmin> LedgerAdmin for Arc<L> {
    fn remove(
        &self,
        keys: &[Key],
        force: bool,
    ) -> impl Future<Output = Result<Vec<Removed>>> + Send {
        (**self).remove(keys, force)
    }
    fn retry(&self, keys: &[Key]) -> impl Future<Output = Result<Vec<Retried>>> + Send {
        (**self).retry(keys)
    }
    fn purge(&self, retention: &Retention) -> impl Future<Output = Result<Purged>> + Send {
        (**self).purge(retention)
    }
    fn get(&self, key: &Key) -> impl Future<Output = Result<Option<Record>>> + Send {
        (**self).get(key)
    }
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page>> + Send {
        (**self).list(query)
    }
    fn stats(&self) -> impl Future<Output = Result<Stats>> + Send {
        (**self).stats()
    }
    fn now(&self) -> impl Future<Output = Result<Timestamp>> + Send {
        (**self).now()
    }
}
