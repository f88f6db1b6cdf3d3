//! The conformance suite: one test per row of the state machine, plus fencing, concurrency,
//! policy and bad input. Each test takes a fresh [`Fixture`] and panics on a violation.
//!
//! Run them all with [`conformance_tests!`](crate::conformance_tests).

use std::collections::HashMap;
use std::sync::Arc;

use qupid::ledger::{
    Claim, Done, Failed, Failure, ListQuery, Offered, Purged, Refused, Removed, Retried, State,
    Stats, Token,
};
use qupid::LedgerAdmin;
use qupid::{Blocking, ErrorKind, Keep, Key, NewerVersions, Offer, Policy, Retention, Version};

use crate::{Fixture, Plant};

mod ordered;
mod table;
pub use ordered::*;
pub use table::every_transition_follows_the_rules;

/// A key from a literal.
pub fn key(s: &str) -> Key {
    Key::new(s).expect("test keys are valid")
}

fn offer_of(k: &str, v: Option<&str>) -> Offer {
    Offer {
        key: key(k),
        version: v.map(|v| Version::new(v).expect("test versions are valid")),
    }
}

/// Offers one key and answers the outcome.
pub async fn offer<L: LedgerAdmin>(l: &L, p: &Policy, k: &str, v: Option<&str>) -> Offered {
    let mut out = l.offer(p, &[offer_of(k, v)]).await.expect("offer");
    assert_eq!(out.len(), 1, "one outcome per offer");
    out.remove(0)
}

/// Offers one key that must be accepted, and answers its claim.
pub async fn accept<L: LedgerAdmin>(l: &L, p: &Policy, k: &str, v: Option<&str>) -> Claim {
    match offer(l, p, k, v).await {
        Offered::Accepted(lease) => Claim {
            key: key(k),
            token: lease.token,
        },
        other => panic!("offer of {k:?} should be accepted, was {other:?}"),
    }
}

async fn one<T: std::fmt::Debug>(
    fut: impl std::future::Future<Output = qupid::Result<Vec<T>>>,
) -> T {
    let mut v = fut.await.expect("ledger call");
    assert_eq!(v.len(), 1, "one outcome per item");
    v.remove(0)
}

async fn start<L: LedgerAdmin>(l: &L, p: &Policy, c: &Claim) -> Result<u32, Refused> {
    one(l.start(p, std::slice::from_ref(c)))
        .await
        .map(|s| s.attempt)
}

async fn complete<L: LedgerAdmin>(l: &L, c: &Claim) -> Result<Done, Refused> {
    one(l.complete(std::slice::from_ref(c))).await
}

async fn fail<L: LedgerAdmin>(l: &L, p: &Policy, c: &Claim, e: &str) -> Result<Failed, Refused> {
    one(l.fail(
        p,
        &[Failure {
            claim: c.clone(),
            error: e.to_owned(),
        }],
    ))
    .await
}

async fn release<L: LedgerAdmin>(l: &L, c: &Claim) -> Result<(), Refused> {
    one(l.release(std::slice::from_ref(c))).await
}

async fn renew<L: LedgerAdmin>(
    l: &L,
    p: &Policy,
    c: &Claim,
) -> Result<qupid::clock::Timestamp, Refused> {
    one(l.renew(p, std::slice::from_ref(c))).await
}

async fn state<L: LedgerAdmin>(l: &L, k: &str) -> Option<State> {
    l.get(&key(k)).await.expect("get").map(|r| r.state)
}

/// Offers, starts and completes `k`.
async fn completed<L: LedgerAdmin>(l: &L, p: &Policy, k: &str, v: Option<&str>) {
    let c = accept(l, p, k, v).await;
    start(l, p, &c).await.expect("start");
    complete(l, &c).await.expect("complete");
}

/// Offers and starts `k`, then fails it until it is Dead (`p.max_attempts` attempts).
async fn dead<L: LedgerAdmin>(l: &L, p: &Policy, k: &str, v: Option<&str>) {
    let c = accept(l, p, k, v).await;
    loop {
        start(l, p, &c).await.expect("start");
        if let Failed::Dead { .. } = fail(l, p, &c, "boom").await.expect("fail") {
            return;
        }
    }
}

/// absent → offer → Queued(lease), `Accepted(token)`.
pub async fn offer_absent_is_accepted<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let before = l.now().await.expect("now");
    let Offered::Accepted(lease) = offer(l, &p, "a", Some("v1")).await else {
        panic!("an absent key must be accepted")
    };
    assert!(lease.token.get() > 0, "tokens start above zero");
    assert_eq!(lease.attempts, 0);
    assert!(
        lease.expires_at >= before.plus(p.lease),
        "lease runs for policy.lease"
    );
    let r = l.get(&key("a")).await.expect("get").expect("a record");
    assert_eq!(r.state, State::Queued);
    assert_eq!(r.version, Some(Version::new("v1").expect("valid")));
    assert_eq!(r.token, lease.token);
    assert_eq!(r.expires_at, Some(lease.expires_at));
    assert_eq!(l.stats().await.expect("stats").queued, 1);
    let b = accept(l, &p, "b", None).await;
    newer_tokens(&fx, &[b.token], &[lease.token], "tokens only grow");
}

/// Tokens of other keys drawn after `before`: larger, or, for a ledger whose tokens grow per
/// key only, distinct.
fn newer_tokens<L>(fx: &Fixture<L>, after: &[Token], before: &[Token], what: &str) {
    for t in after {
        if fx.tokens_per_key {
            assert!(!before.contains(t), "{what}: {t:?} was drawn before");
        } else {
            assert!(
                before.iter().all(|b| t > b),
                "{what}: {t:?} after {before:?}"
            );
        }
    }
}

/// Completed(v) / Dead(v) → offer with w ≠ v → Queued: changed content is processed again.
pub async fn offer_finished_with_new_version_is_accepted<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    completed(l, &p, "c", Some("v1")).await;
    dead(l, &p, "d", Some("v1")).await;
    for k in ["c", "d"] {
        let Offered::Accepted(lease) = offer(l, &p, k, Some("v2")).await else {
            panic!("{k}: a new version must be processed again")
        };
        assert_eq!(
            lease.attempts, 0,
            "a new version starts with fresh attempts"
        );
        let r = l.get(&key(k)).await.expect("get").expect("record");
        assert_eq!(r.state, State::Queued);
        assert_eq!(r.version.as_ref().map(Version::as_str), Some("v2"));
    }
    // A version appearing where there was none is a change too.
    completed(l, &p, "n", None).await;
    assert!(matches!(
        offer(l, &p, "n", Some("v1")).await,
        Offered::Accepted(_)
    ));
}

/// Completed / Dead, blocking → offer with the same or no version → unchanged, `Duplicate`.
pub async fn offer_finished_blocking_is_duplicate<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    completed(l, &p, "c", Some("v1")).await;
    dead(l, &p, "d", Some("v1")).await;
    fx.advance(100).await;
    for (k, st) in [("c", State::Completed), ("d", State::Dead)] {
        let before = l.get(&key(k)).await.expect("get");
        assert_eq!(
            offer(l, &p, k, Some("v1")).await,
            Offered::Duplicate(st),
            "{k}: same version"
        );
        assert_eq!(
            offer(l, &p, k, None).await,
            Offered::Duplicate(st),
            "{k}: no version"
        );
        assert_eq!(
            l.get(&key(k)).await.expect("get"),
            before,
            "{k}: a duplicate changes nothing"
        );
    }
}

/// Completed / Dead, not blocking → offer → Queued: the window passed, or the state is not in
/// the blocking set.
pub async fn offer_finished_not_blocking_is_accepted<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    // Not in the blocking set.
    p.completed = Blocking::Never;
    p.dead = Blocking::Never;
    completed(l, &p, "c", None).await;
    dead(l, &p, "d", None).await;
    assert!(matches!(
        offer(l, &p, "c", None).await,
        Offered::Accepted(_)
    ));
    assert!(matches!(
        offer(l, &p, "d", None).await,
        Offered::Accepted(_)
    ));
    // A window: blocks inside it, not after it.
    p.completed = Blocking::For(fx.ticks(5));
    completed(l, &p, "w", None).await;
    fx.advance(2).await;
    assert_eq!(
        offer(l, &p, "w", None).await,
        Offered::Duplicate(State::Completed)
    );
    fx.advance(4).await;
    assert!(
        matches!(offer(l, &p, "w", None).await, Offered::Accepted(_)),
        "window passed"
    );
}

/// Queued / Running with a valid lease → offer → unchanged, `Duplicate`; a newer version is
/// remembered.
pub async fn offer_leased_is_duplicate_and_remembers_newer_version<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let q = accept(l, &p, "q", Some("v1")).await;
    let r = accept(l, &p, "r", Some("v1")).await;
    start(l, &p, &r).await.expect("start");
    fx.advance(5).await;
    assert_eq!(
        offer(l, &p, "q", Some("v1")).await,
        Offered::Duplicate(State::Queued)
    );
    assert_eq!(
        offer(l, &p, "r", None).await,
        Offered::Duplicate(State::Running)
    );
    assert_eq!(
        offer(l, &p, "r", Some("v2")).await,
        Offered::Duplicate(State::Running)
    );
    let rec = l.get(&key("r")).await.expect("get").expect("record");
    assert_eq!(rec.token, r.token, "the holder keeps its lease");
    assert_eq!(rec.version.as_ref().map(Version::as_str), Some("v1"));
    assert_eq!(rec.newer_version.as_ref().map(Version::as_str), Some("v2"));
    let rec = l.get(&key("q")).await.expect("get").expect("record");
    assert_eq!(
        (rec.state, rec.token, rec.newer_version),
        (State::Queued, q.token, None)
    );
}

/// Queued / Running with an expired lease → offer → Queued(new lease, new token); the old
/// holder is fenced out and the expiry counts toward the crash cap.
pub async fn offer_after_lease_expiry_reclaims_and_fences<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let old = accept(l, &p, "k", None).await;
    start(l, &p, &old).await.expect("start");
    fx.advance(11).await;
    let Offered::Accepted(lease) = offer(l, &p, "k", None).await else {
        panic!("an expired lease lets the next offer through")
    };
    assert!(lease.token > old.token, "a new, larger token");
    assert_eq!(lease.attempts, 1, "attempts survive a takeover");
    let rec = l.get(&key("k")).await.expect("get").expect("record");
    assert_eq!(
        (rec.state, rec.abandoned, rec.attempts),
        (State::Queued, 1, 1)
    );
    assert_eq!(
        complete(l, &old).await,
        Err(Refused::LeaseLost),
        "old holder is fenced"
    );
    let new = Claim {
        key: key("k"),
        token: lease.token,
    };
    assert_eq!(start(l, &p, &new).await, Ok(2));
    assert_eq!(complete(l, &new).await, Ok(Done { superseded: false }));
    // A Queued key that nobody started expires too.
    accept(l, &p, "q", None).await;
    fx.advance(11).await;
    assert!(matches!(
        offer(l, &p, "q", None).await,
        Offered::Accepted(_)
    ));
}

/// Queued → start(token) → Running(attempt + 1).
pub async fn start_runs_a_queued_key<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let c = accept(l, &p, "k", None).await;
    assert_eq!(start(l, &p, &c).await, Ok(1));
    let rec = l.get(&key("k")).await.expect("get").expect("record");
    assert_eq!((rec.state, rec.attempts), (State::Running, 1));
    assert_eq!(
        start(l, &p, &c).await,
        Err(Refused::WrongState(State::Running))
    );
    let stale = Claim {
        key: key("k"),
        token: qupid::ledger::Token::new(c.token.get() + 1000),
    };
    assert_eq!(start(l, &p, &stale).await, Err(Refused::LeaseLost));
    let absent = Claim {
        key: key("nope"),
        token: c.token,
    };
    assert_eq!(start(l, &p, &absent).await, Err(Refused::LeaseLost));
    let s = l.stats().await.expect("stats");
    assert_eq!((s.queued, s.running), (0, 1));
}

/// offer-and-start: where an offer would queue a key, it is Running at once (attempt + 1);
/// duplicates, remembered versions, expiry takeovers, the crash cap and batch order are as
/// for `offer`.
pub async fn offer_and_start_runs_accepted_keys<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.crash_cap = 2;
    completed(l, &p, "done", None).await;
    let queued = accept(l, &p, "queued", None).await;
    let before = l.now().await.expect("now");
    let batch = [
        offer_of("a", Some("v1")),
        offer_of("done", None),
        offer_of("queued", None),
        offer_of("b", None),
        offer_of("a", Some("v2")), // the same key twice: a duplicate, its version remembered
        offer_of("done", Some("w")), // changed content
    ];
    let out = l
        .offer_and_start(&p, &batch)
        .await
        .expect("offer_and_start");
    assert_eq!(out.len(), batch.len(), "one outcome per offer");
    let lease = |i: usize| {
        out[i]
            .lease()
            .unwrap_or_else(|| panic!("item {i} accepted"))
    };
    assert_eq!(lease(0).attempts, 1, "the attempt just started");
    assert!(lease(0).expires_at >= before.plus(p.lease));
    assert_eq!(out[1], Offered::Duplicate(State::Completed));
    assert_eq!(out[2], Offered::Duplicate(State::Queued));
    assert_eq!(lease(3).attempts, 1);
    assert_eq!(out[4], Offered::Duplicate(State::Running));
    assert_eq!(lease(5).attempts, 1, "a changed record starts afresh");
    newer_tokens(
        &fx,
        &[lease(0).token, lease(3).token, lease(5).token],
        &[queued.token],
        "tokens only grow",
    );
    assert!(
        [0, 3, 5].iter().all(|&i| lease(i).token != queued.token),
        "tokens only grow"
    );
    let rec = l.get(&key("a")).await.expect("get").expect("record");
    assert_eq!(
        (rec.state, rec.attempts, rec.token, rec.expires_at),
        (State::Running, 1, lease(0).token, Some(lease(0).expires_at))
    );
    assert_eq!(rec.version.as_ref().map(Version::as_str), Some("v1"));
    let s = l.stats().await.expect("stats");
    assert_eq!((s.queued, s.running, s.completed), (1, 3, 0));
    // A started key completes directly; the remembered newer version leaves it processable.
    let a = Claim {
        key: key("a"),
        token: lease(0).token,
    };
    assert_eq!(
        start(l, &p, &a).await,
        Err(Refused::WrongState(State::Running))
    );
    assert_eq!(complete(l, &a).await, Ok(Done { superseded: true }));
    // An expired lease is taken over by the next offer-and-start: attempts go on counting.
    let b = Claim {
        key: key("b"),
        token: lease(3).token,
    };
    fx.advance(11).await;
    let again = one(l.offer_and_start(&p, &[offer_of("b", None)])).await;
    let Offered::Accepted(taken) = again else {
        panic!("an expired lease lets the next offer-and-start through, was {again:?}")
    };
    assert!(taken.token > b.token);
    assert_eq!(taken.attempts, 2, "attempts survive a takeover");
    assert_eq!(
        complete(l, &b).await,
        Err(Refused::LeaseLost),
        "old holder fenced"
    );
    let rec = l.get(&key("b")).await.expect("get").expect("record");
    assert_eq!(
        (rec.state, rec.attempts, rec.abandoned),
        (State::Running, 2, 1)
    );
    // The second expiry reaches the crash cap: Dead, and that offer is a duplicate.
    fx.advance(11).await;
    assert_eq!(
        one(l.offer_and_start(&p, &[offer_of("b", None)])).await,
        Offered::Duplicate(State::Dead)
    );
    let rec = l.get(&key("b")).await.expect("get").expect("record");
    assert_eq!(rec.last_error.as_deref(), Some("abandoned"));
}

/// Queued / Running → renew(token) → same state, later expiry.
pub async fn renew_extends_the_lease<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let q = accept(l, &p, "q", None).await;
    let r = accept(l, &p, "r", None).await;
    start(l, &p, &r).await.expect("start");
    let first = l
        .get(&key("r"))
        .await
        .expect("get")
        .and_then(|r| r.expires_at)
        .expect("expiry");
    fx.advance(8).await;
    let renewed = renew(l, &p, &r).await.expect("renew");
    assert!(renewed > first, "renewal moves the expiry later");
    renew(l, &p, &q).await.expect("renew queued");
    fx.advance(8).await; // 16 ticks after the offer, 8 after the renewal
    assert_eq!(
        offer(l, &p, "r", None).await,
        Offered::Duplicate(State::Running)
    );
    assert_eq!(
        offer(l, &p, "q", None).await,
        Offered::Duplicate(State::Queued)
    );
    assert_eq!(
        state(l, "r").await,
        Some(State::Running),
        "renew keeps the state"
    );
    let stale = Claim {
        key: key("r"),
        token: q.token,
    };
    assert_eq!(renew(l, &p, &stale).await, Err(Refused::LeaseLost));
    complete(l, &r).await.expect("complete");
    assert_eq!(
        renew(l, &p, &r).await,
        Err(Refused::WrongState(State::Completed))
    );
}

/// Running → complete(token) → Completed(version, at); stale tokens get `LeaseLost`.
pub async fn complete_finishes_a_running_key<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let c = accept(l, &p, "k", Some("v1")).await;
    assert_eq!(
        complete(l, &c).await,
        Err(Refused::WrongState(State::Queued)),
        "not started"
    );
    start(l, &p, &c).await.expect("start");
    let stale = Claim {
        key: key("k"),
        token: qupid::ledger::Token::new(c.token.get() + 1000),
    };
    assert_eq!(complete(l, &stale).await, Err(Refused::LeaseLost));
    assert_eq!(
        state(l, "k").await,
        Some(State::Running),
        "a refused completion changes nothing"
    );
    let before = l.now().await.expect("now");
    assert_eq!(complete(l, &c).await, Ok(Done { superseded: false }));
    let rec = l.get(&key("k")).await.expect("get").expect("record");
    assert_eq!(rec.state, State::Completed);
    assert_eq!(rec.version.as_ref().map(Version::as_str), Some("v1"));
    assert!(rec.finished_at.expect("finished_at") >= before);
    assert_eq!(rec.expires_at, None);
    assert_eq!(
        complete(l, &c).await,
        Err(Refused::WrongState(State::Completed))
    );
    let s = l.stats().await.expect("stats");
    assert_eq!((s.running, s.completed), (0, 1));
}

/// Completing an attempt while a newer version was remembered leaves the key processable.
pub async fn complete_after_newer_version_does_not_block<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let c = accept(l, &p, "k", Some("v1")).await;
    start(l, &p, &c).await.expect("start");
    assert_eq!(
        offer(l, &p, "k", Some("v2")).await,
        Offered::Duplicate(State::Running)
    );
    assert_eq!(complete(l, &c).await, Ok(Done { superseded: true }));
    let rec = l.get(&key("k")).await.expect("get").expect("record");
    assert!(rec.superseded);
    // Even an offer carrying the old version (or none) gets through: the record is stale.
    assert!(matches!(
        offer(l, &p, "k", None).await,
        Offered::Accepted(_)
    ));
}

/// Running → fail(token) → Queued while attempts remain, then Dead(error, at).
pub async fn fail_retries_then_goes_dead<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 2;
    let c = accept(l, &p, "k", None).await;
    assert_eq!(
        fail(l, &p, &c, "early").await,
        Err(Refused::WrongState(State::Queued))
    );
    start(l, &p, &c).await.expect("start");
    assert_eq!(
        fail(l, &p, &c, "first").await,
        Ok(Failed::Retry { attempts: 1 })
    );
    let rec = l.get(&key("k")).await.expect("get").expect("record");
    assert_eq!(
        (rec.state, rec.token),
        (State::Queued, c.token),
        "the holder keeps its lease"
    );
    assert_eq!(rec.last_error.as_deref(), Some("first"));
    assert_eq!(start(l, &p, &c).await, Ok(2));
    assert_eq!(
        fail(l, &p, &c, "second").await,
        Ok(Failed::Dead { attempts: 2 })
    );
    let rec = l.get(&key("k")).await.expect("get").expect("record");
    assert_eq!(rec.state, State::Dead);
    assert_eq!(rec.last_error.as_deref(), Some("second"));
    assert!(rec.finished_at.is_some());
    assert_eq!(
        offer(l, &p, "k", None).await,
        Offered::Duplicate(State::Dead)
    );
    let stale = Claim {
        key: key("k"),
        token: qupid::ledger::Token::new(c.token.get() + 1000),
    };
    assert_eq!(fail(l, &p, &stale, "x").await, Err(Refused::LeaseLost));
}

/// Queued / Running → release(token) → absent.
pub async fn release_makes_the_key_absent<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let q = accept(l, &p, "q", None).await;
    let r = accept(l, &p, "r", None).await;
    start(l, &p, &r).await.expect("start");
    let stale = Claim {
        key: key("q"),
        token: r.token,
    };
    assert_eq!(release(l, &stale).await, Err(Refused::LeaseLost));
    assert_eq!(state(l, "q").await, Some(State::Queued));
    release(l, &q).await.expect("release queued");
    release(l, &r).await.expect("release running");
    assert_eq!(state(l, "q").await, None);
    assert_eq!(state(l, "r").await, None);
    assert_eq!(
        release(l, &q).await,
        Err(Refused::LeaseLost),
        "already released"
    );
    assert!(
        matches!(offer(l, &p, "r", None).await, Offered::Accepted(_)),
        "polled again"
    );
    let s = l.stats().await.expect("stats");
    assert_eq!((s.queued, s.running), (1, 0));
}

/// Completed / Dead → remove → absent.
pub async fn remove_finished_keys<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    completed(l, &p, "c", None).await;
    dead(l, &p, "d", None).await;
    let out = l
        .remove(&[key("c"), key("d"), key("x")], false)
        .await
        .expect("remove");
    assert_eq!(
        out,
        vec![Removed::Removed, Removed::Removed, Removed::NotFound]
    );
    assert_eq!(state(l, "c").await, None);
    assert_eq!(state(l, "d").await, None);
    assert!(
        matches!(offer(l, &p, "c", None).await, Offered::Accepted(_)),
        "processable again"
    );
    assert_eq!(l.stats().await.expect("stats").total(), 1);
}

/// Queued / Running → remove → refused unless forced; forced fences the holder.
pub async fn remove_leased_key_needs_force<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let q = accept(l, &p, "q", None).await;
    let r = accept(l, &p, "r", None).await;
    start(l, &p, &r).await.expect("start");
    let out = l
        .remove(&[key("q"), key("r")], false)
        .await
        .expect("remove");
    assert_eq!(
        out,
        vec![
            Removed::Leased(State::Queued),
            Removed::Leased(State::Running)
        ]
    );
    assert_eq!(state(l, "r").await, Some(State::Running));
    let out = l.remove(&[key("q"), key("r")], true).await.expect("remove");
    assert_eq!(out, vec![Removed::Removed, Removed::Removed]);
    assert_eq!(
        complete(l, &r).await,
        Err(Refused::LeaseLost),
        "the holder is fenced out"
    );
    assert_eq!(start(l, &p, &q).await, Err(Refused::LeaseLost));
    assert_eq!(
        state(l, "r").await,
        None,
        "a fenced completion recreates nothing"
    );
}

/// Dead → retry → absent; anything else is refused.
pub async fn retry_revives_only_dead_keys<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    dead(l, &p, "d", None).await;
    completed(l, &p, "c", None).await;
    accept(l, &p, "q", None).await;
    let out = l
        .retry(&[key("d"), key("c"), key("q"), key("x")])
        .await
        .expect("retry");
    assert_eq!(
        out,
        vec![
            Retried::Retried,
            Retried::NotDead(State::Completed),
            Retried::NotDead(State::Queued),
            Retried::NotFound
        ]
    );
    assert_eq!(state(l, "d").await, None);
    assert!(matches!(
        offer(l, &p, "d", None).await,
        Offered::Accepted(_)
    ));
}

/// Completed / Dead → purge → absent, by age, each state by its own rule.
pub async fn purge_by_age<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    completed(l, &p, "c-old", None).await;
    dead(l, &p, "d-old", None).await;
    fx.advance(20).await;
    completed(l, &p, "c-new", None).await;
    dead(l, &p, "d-new", None).await;
    accept(l, &p, "q", None).await;
    fx.advance(5).await;
    let keep_all = l.purge(&Retention::default()).await.expect("purge");
    assert_eq!(keep_all, Purged::default(), "the default keeps everything");
    let retention = Retention {
        completed: Keep::younger_than(fx.ticks(15)),
        dead: Keep::FOREVER,
    };
    assert_eq!(
        l.purge(&retention).await.expect("purge"),
        Purged {
            completed: 1,
            dead: 0
        }
    );
    assert_eq!(state(l, "c-old").await, None);
    assert_eq!(state(l, "c-new").await, Some(State::Completed));
    assert_eq!(
        state(l, "d-old").await,
        Some(State::Dead),
        "dead has its own rule"
    );
    let retention = Retention {
        completed: Keep::FOREVER,
        dead: Keep::younger_than(fx.ticks(15)),
    };
    assert_eq!(
        l.purge(&retention).await.expect("purge"),
        Purged {
            completed: 0,
            dead: 1
        }
    );
    assert_eq!(state(l, "d-old").await, None);
    assert_eq!(
        state(l, "q").await,
        Some(State::Queued),
        "leased keys are never purged"
    );
    let s = l.stats().await.expect("stats");
    assert_eq!((s.queued, s.completed, s.dead), (1, 1, 1));
}

/// Completed / Dead → purge → absent, keeping only the newest N.
pub async fn purge_by_count<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    for i in 0..5 {
        completed(l, &p, &format!("c{i}"), None).await;
        dead(l, &p, &format!("d{i}"), None).await;
        fx.advance(1).await;
    }
    let retention = Retention {
        completed: Keep::newest(2),
        dead: Keep::newest(4),
    };
    assert_eq!(
        l.purge(&retention).await.expect("purge"),
        Purged {
            completed: 3,
            dead: 1
        }
    );
    for i in 0..5 {
        let want = (i >= 3).then_some(State::Completed);
        assert_eq!(
            state(l, &format!("c{i}")).await,
            want,
            "c{i}: the newest two are kept"
        );
        let want = (i >= 1).then_some(State::Dead);
        assert_eq!(
            state(l, &format!("d{i}")).await,
            want,
            "d{i}: the newest four are kept"
        );
    }
    assert_eq!(
        l.purge(&retention).await.expect("purge"),
        Purged::default(),
        "idempotent"
    );
}

/// After a takeover, every operation with the old token is refused and changes nothing.
pub async fn stale_tokens_change_nothing<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let old = accept(l, &p, "k", None).await;
    start(l, &p, &old).await.expect("start");
    fx.advance(11).await;
    let new = accept(l, &p, "k", None).await;
    let snapshot = l.get(&key("k")).await.expect("get");
    assert_eq!(start(l, &p, &old).await, Err(Refused::LeaseLost));
    assert_eq!(renew(l, &p, &old).await, Err(Refused::LeaseLost));
    assert_eq!(complete(l, &old).await, Err(Refused::LeaseLost));
    assert_eq!(fail(l, &p, &old, "x").await, Err(Refused::LeaseLost));
    assert_eq!(release(l, &old).await, Err(Refused::LeaseLost));
    assert_eq!(
        l.get(&key("k")).await.expect("get"),
        snapshot,
        "stale calls changed the record"
    );
    assert_eq!(start(l, &p, &new).await, Ok(2));
}

/// When a lease expires, of many concurrent offers exactly one gets through.
pub async fn lease_expiry_lets_exactly_one_through<L: LedgerAdmin + Clone>(fx: Fixture<L>) {
    let p = fx.policy();
    accept(&fx.ledger, &p, "k", None).await;
    fx.advance(11).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (l, p) = (fx.ledger.clone(), p.clone());
        tasks.push(tokio::spawn(async move { offer(&l, &p, "k", None).await }));
    }
    let mut accepted = 0;
    for t in tasks {
        if let Offered::Accepted(_) = t.await.expect("task") {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1, "exactly one new holder after expiry");
}

/// Many tasks offer the same 10,000 keys at once: each key is accepted exactly once.
pub async fn concurrent_offers_accept_each_key_once<L: LedgerAdmin + Clone>(fx: Fixture<L>) {
    const KEYS: usize = 10_000;
    const TASKS: usize = 8;
    let p = Arc::new(fx.policy());
    let keys: Arc<Vec<Offer>> = Arc::new(
        (0..KEYS)
            .map(|i| Offer::new(key(&format!("key-{i}"))))
            .collect(),
    );
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (l, p, keys) = (fx.ledger.clone(), p.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            // Each task walks the keys in its own order and batch size, so batches overlap.
            let mut order: Vec<usize> = (0..KEYS).collect();
            order.rotate_left(t * KEYS / TASKS);
            if t % 2 == 1 {
                order.reverse();
            }
            let mut won = Vec::new();
            for chunk in order.chunks(50 + t * 37) {
                let batch: Vec<Offer> = chunk.iter().map(|&i| keys[i].clone()).collect();
                let out = l.offer(&p, &batch).await.expect("offer");
                assert_eq!(out.len(), batch.len());
                for (o, i) in out.iter().zip(chunk) {
                    if let Offered::Accepted(_) = o {
                        won.push(*i);
                    }
                }
            }
            won
        }));
    }
    let mut count = vec![0u32; KEYS];
    for t in tasks {
        for i in t.await.expect("task") {
            count[i] += 1;
        }
    }
    let wrong: Vec<_> = count
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 1)
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "keys accepted other than once (key, count): {wrong:?}"
    );
    assert_eq!(fx.ledger.stats().await.expect("stats").queued, KEYS as u64);
}

/// A key whose lease expires `crash_cap` times goes Dead with "abandoned".
pub async fn crash_cap_sends_abandoned_keys_dead<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.crash_cap = 2;
    let c = accept(l, &p, "k", None).await;
    start(l, &p, &c).await.expect("start");
    fx.advance(11).await;
    let c = accept(l, &p, "k", None).await; // first expiry
    start(l, &p, &c).await.expect("start");
    fx.advance(11).await;
    assert_eq!(
        offer(l, &p, "k", None).await,
        Offered::Duplicate(State::Dead),
        "second expiry"
    );
    let rec = l.get(&key("k")).await.expect("get").expect("record");
    assert_eq!((rec.state, rec.abandoned), (State::Dead, 2));
    assert_eq!(rec.last_error.as_deref(), Some("abandoned"));
    assert!(
        complete(l, &c).await.is_err(),
        "an abandoned holder cannot complete"
    );
    assert_eq!(state(l, "k").await, Some(State::Dead));
    // With no cap, expiries go on being reclaimed.
    p.crash_cap = 0;
    let mut c = accept(l, &p, "z", None).await;
    for _ in 0..5 {
        fx.advance(11).await;
        c = accept(l, &p, "z", None).await;
    }
    assert_eq!(start(l, &p, &c).await, Ok(1));
}

/// With `NewerVersions::Ignore`, a version offered in flight is not remembered.
pub async fn ignored_newer_versions_are_forgotten<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.newer_versions = NewerVersions::Ignore;
    let c = accept(l, &p, "k", Some("v1")).await;
    start(l, &p, &c).await.expect("start");
    assert_eq!(
        offer(l, &p, "k", Some("v2")).await,
        Offered::Duplicate(State::Running)
    );
    assert_eq!(
        l.get(&key("k"))
            .await
            .expect("get")
            .expect("record")
            .newer_version,
        None
    );
    assert_eq!(complete(l, &c).await, Ok(Done { superseded: false }));
    assert_eq!(
        offer(l, &p, "k", Some("v1")).await,
        Offered::Duplicate(State::Completed)
    );
}

/// A Dead key blocks for its own window, independently of Completed.
pub async fn dead_blocking_window<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    p.dead = Blocking::For(fx.ticks(5));
    dead(l, &p, "d", None).await;
    completed(l, &p, "c", None).await;
    fx.advance(3).await;
    assert_eq!(
        offer(l, &p, "d", None).await,
        Offered::Duplicate(State::Dead)
    );
    fx.advance(3).await;
    assert!(
        matches!(offer(l, &p, "d", None).await, Offered::Accepted(_)),
        "dead window passed"
    );
    assert_eq!(
        offer(l, &p, "c", None).await,
        Offered::Duplicate(State::Completed),
        "completed blocks forever"
    );
}

/// A record past its blocking window but inside retention is visible and does not block.
pub async fn kept_is_not_blocking<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.completed = Blocking::For(fx.ticks(2));
    p.retention.completed = Keep::younger_than(fx.ticks(100));
    completed(l, &p, "k", None).await;
    fx.advance(3).await;
    assert_eq!(
        l.purge(&p.retention).await.expect("purge"),
        Purged::default()
    );
    assert_eq!(state(l, "k").await, Some(State::Completed), "still kept");
    let page = l
        .list(&ListQuery::new(State::Completed))
        .await
        .expect("list");
    assert_eq!(page.records.len(), 1, "still listed");
    assert!(
        matches!(offer(l, &p, "k", None).await, Offered::Accepted(_)),
        "no longer blocks"
    );
}

/// `stats` counts what `list` pages through, page boundaries neither skip nor repeat.
pub async fn stats_agree_with_list<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    for i in 0..7 {
        accept(l, &p, &format!("q{i}"), None).await;
    }
    for i in 0..5 {
        let c = accept(l, &p, &format!("r{i}"), None).await;
        start(l, &p, &c).await.expect("start");
    }
    for i in 0..11 {
        completed(l, &p, &format!("c{i:02}"), None).await;
    }
    for i in 0..4 {
        dead(l, &p, &format!("d{i}"), None).await;
    }
    let stats = l.stats().await.expect("stats");
    assert_eq!(
        (stats.queued, stats.running, stats.completed, stats.dead),
        (7, 5, 11, 4)
    );
    for st in State::ALL {
        let mut seen: Vec<Key> = Vec::new();
        let mut q = ListQuery::new(st).limit(3);
        loop {
            let page = l.list(&q).await.expect("list");
            assert!(page.records.len() <= 3);
            for r in &page.records {
                assert_eq!(r.state, st);
                seen.push(r.key.clone());
            }
            match page.next {
                Some(next) => q = q.after(next),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(seen, sorted, "{st}: in key order, without repeats");
        assert_eq!(
            seen.len() as u64,
            stats.count(st),
            "{st}: list and stats agree"
        );
    }
}

/// A key twice in one batch of claims: the second copy sees what the first did, and the
/// indexes behind `list` and `stats` end where the last transition left the key.
pub async fn a_key_twice_in_a_batch_sees_its_first_outcome<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let mut one_try = p.clone();
    one_try.max_attempts = 1;
    let [a, b, d] = [
        accept(l, &p, "a", None).await,
        accept(l, &p, "b", None).await,
        accept(l, &p, "d", None).await,
    ];
    let twice = |c: &Claim| vec![c.clone(), c.clone()];

    let started = l.start(&p, &twice(&a)).await.expect("start");
    assert_eq!(started[0].as_ref().map(|s| s.attempt), Ok(1));
    assert_eq!(started[1], Err(Refused::WrongState(State::Running)));
    let renewed = l.renew(&p, &twice(&a)).await.expect("renew");
    assert!(renewed.iter().all(Result::is_ok), "{renewed:?}");
    let done = l.complete(&twice(&a)).await.expect("complete");
    assert_eq!(done[0], Ok(Done { superseded: false }));
    assert_eq!(done[1], Err(Refused::WrongState(State::Completed)));
    assert_eq!(state(l, "a").await, Some(State::Completed));

    let released = l.release(&twice(&b)).await.expect("release");
    assert_eq!(released, vec![Ok(()), Err(Refused::LeaseLost)]);
    assert_eq!(state(l, "b").await, None);

    start(l, &p, &d).await.expect("start");
    let failure = Failure {
        claim: d.clone(),
        error: "boom".to_owned(),
    };
    let failed = l
        .fail(&one_try, &[failure.clone(), failure])
        .await
        .expect("fail");
    assert_eq!(failed[0], Ok(Failed::Dead { attempts: 1 }));
    assert_eq!(failed[1], Err(Refused::WrongState(State::Dead)));
    let retried = l.retry(&[key("d"), key("d")]).await.expect("retry");
    assert_eq!(retried, vec![Retried::Retried, Retried::NotFound]);
    let removed = l
        .remove(&[key("a"), key("a")], false)
        .await
        .expect("remove");
    assert_eq!(removed, vec![Removed::Removed, Removed::NotFound]);

    // Offered twice after its removal: accepted once, then a duplicate of the first copy.
    let out = l
        .offer_and_start(&p, &[offer_of("a", None), offer_of("a", None)])
        .await
        .expect("offer and start");
    assert!(matches!(out[0], Offered::Accepted(_)), "{out:?}");
    assert_eq!(out[1], Offered::Duplicate(State::Running));

    let stats = l.stats().await.expect("stats");
    assert_eq!(
        (stats.queued, stats.running, stats.completed, stats.dead),
        (0, 1, 0, 0),
        "{stats:?}"
    );
    for st in [State::Queued, State::Running, State::Completed, State::Dead] {
        let page = l.list(&ListQuery::new(st)).await.expect("list");
        let keys: Vec<&str> = page.records.iter().map(|r| r.key.as_str()).collect();
        let want: &[&str] = if st == State::Running { &["a"] } else { &[] };
        assert_eq!(keys, want, "{st}");
    }
}

/// A batch with mixed outcomes answers each item in order, independently.
pub async fn batches_answer_in_order<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    completed(l, &p, "done", None).await;
    let held = accept(l, &p, "held", None).await;
    let keys: Vec<String> = (0..200).map(|i| format!("new-{i}")).collect();
    let mut batch = vec![offer_of("done", None), offer_of("held", None)];
    batch.extend(keys.iter().map(|k| offer_of(k, None)));
    batch.push(offer_of("new-0", None)); // the same key twice in one batch
    let out = l.offer(&p, &batch).await.expect("offer");
    assert_eq!(out.len(), batch.len());
    assert_eq!(out[0], Offered::Duplicate(State::Completed));
    assert_eq!(out[1], Offered::Duplicate(State::Queued));
    assert!(out[2..202]
        .iter()
        .all(|o| matches!(o, Offered::Accepted(_))));
    assert_eq!(
        out[202],
        Offered::Duplicate(State::Queued),
        "second copy in a batch is a duplicate"
    );
    let claims: Vec<Claim> = out[2..6]
        .iter()
        .zip(&keys)
        .map(|(o, k)| Claim {
            key: key(k),
            token: o.lease().expect("accepted").token,
        })
        .chain([
            Claim {
                key: key("done"),
                token: held.token,
            },
            held.clone(),
        ])
        .collect();
    let started = l.start(&p, &claims).await.expect("start");
    assert!(started[..4]
        .iter()
        .all(|s| s.as_ref().is_ok_and(|s| s.attempt == 1)));
    assert_eq!(started[4], Err(Refused::LeaseLost));
    assert!(started[5].is_ok());
    let mut counts = HashMap::new();
    for o in &out {
        *counts.entry(matches!(o, Offered::Accepted(_))).or_insert(0) += 1;
    }
    assert_eq!(counts.get(&true), Some(&200));
}

/// Keys at the length limit and with unusual characters are stored and found exactly.
pub async fn unusual_keys_round_trip<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let long = "k".repeat(qupid::MAX_KEY_LEN);
    let odd = [
        long.as_str(),
        "with space",
        "new\nline",
        "{hash}tag",
        "quote\"'`",
        "percent%_*?[]",
        "ünï/çødé/🦀",
        "nul\0byte",
        "a:b:c",
    ];
    for k in odd {
        let c = accept(l, &p, k, Some(k)).await;
        assert_eq!(
            offer(l, &p, k, None).await,
            Offered::Duplicate(State::Queued),
            "{k:?}"
        );
        start(l, &p, &c).await.expect("start");
        complete(l, &c).await.expect("complete");
        let r = l.get(&key(k)).await.expect("get").expect("record");
        assert_eq!(r.key.as_str(), k);
        assert_eq!(r.version.as_ref().map(Version::as_str), Some(k));
    }
    let page = l
        .list(&ListQuery::new(State::Completed).limit(100))
        .await
        .expect("list");
    let mut want: Vec<&str> = odd.to_vec();
    want.sort();
    let got: Vec<&str> = page.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(got, want, "listed in byte order");
    assert!(
        Key::new("k".repeat(qupid::MAX_KEY_LEN + 1)).is_err(),
        "too long is refused, not cut"
    );
}

/// The expired leases `stats` counts follow the clock: a lease counts once the clock reaches
/// its expiry, and stops counting when it is renewed, taken over, released or ended. They are
/// a part of `queued + running`, which `total` does not count twice.
pub async fn stats_count_expired_leases<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    let expired = |s: Stats| s.expired;
    let q1 = accept(l, &p, "q1", None).await;
    let q2 = accept(l, &p, "q2", None).await;
    let r = accept(l, &p, "r", None).await;
    start(l, &p, &r).await.expect("start");
    completed(l, &p, "c", None).await;
    dead(l, &p, "d", None).await;
    let s = l.stats().await.expect("stats");
    assert_eq!(
        (s.queued, s.running, s.completed, s.dead, s.expired),
        (2, 1, 1, 1, 0),
        "fresh leases have not expired: {s:?}"
    );
    fx.advance(5).await;
    assert_eq!(expired(l.stats().await.expect("stats")), 0, "half a lease");

    fx.advance(6).await;
    let s = l.stats().await.expect("stats");
    assert_eq!(
        (s.queued, s.running, s.completed, s.dead, s.expired),
        (2, 1, 1, 1, 3),
        "every lease has expired, and the keys keep their states: {s:?}"
    );
    assert_eq!(s.total(), 5, "expired leases are not counted twice");

    renew(l, &p, &r)
        .await
        .expect("a current token renews after expiry");
    assert_eq!(expired(l.stats().await.expect("stats")), 2, "renewed");
    let taken = accept(l, &p, "q1", None).await;
    assert!(
        taken.token > q1.token,
        "the next offer takes an expired lease over"
    );
    assert_eq!(expired(l.stats().await.expect("stats")), 1, "taken over");
    release(l, &q2).await.expect("release");
    let s = l.stats().await.expect("stats");
    assert_eq!(
        (s.queued, s.running, s.expired),
        (1, 1, 0),
        "released: {s:?}"
    );

    // Started in the same call that accepts it, then expired, then completed.
    let started = one(l.offer_and_start(&p, &[offer_of("s", None)])).await;
    let s_claim = Claim {
        key: key("s"),
        token: started.lease().expect("accepted").token,
    };
    fx.advance(11).await;
    let s = l.stats().await.expect("stats");
    assert_eq!(
        (s.queued, s.running, s.expired),
        (1, 2, 3),
        "q1, r and s have expired: {s:?}"
    );
    complete(l, &s_claim).await.expect("complete after expiry");
    fail(l, &p, &r, "boom").await.expect("fail after expiry");
    let s = l.stats().await.expect("stats");
    assert_eq!(
        (s.queued, s.running, s.completed, s.dead, s.expired),
        (1, 0, 2, 2, 1),
        "ended keys are not leased: {s:?}"
    );
}

/// The fixture's plant, or `None` (and a note on stderr) for a ledger that cannot hold an
/// unreadable record: the test is then skipped.
fn plant_of<L>(fx: &Fixture<L>, test: &str) -> Option<Arc<dyn Plant>> {
    if fx.plant.is_none() {
        eprintln!(
            "{test}: skipped: this ledger cannot hold an unreadable record (its fixture has \
             no plant)"
        );
    }
    fx.plant.clone()
}

/// What the store holds under each key, raw.
async fn raws(plant: &dyn Plant, keys: &[&str]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for k in keys {
        out.push(plant.raw(&key(k)).await);
    }
    out
}

fn is_unreadable(o: &Offered) -> bool {
    matches!(o, Offered::Unreadable(u) if !u.found().is_empty())
}

fn refused_unreadable<T: std::fmt::Debug>(r: &Result<T, Refused>) -> bool {
    matches!(r, Err(Refused::Unreadable(u)) if !u.found().is_empty())
}

/// A foreign or damaged record under one key is answered for that key alone, by `offer` and
/// `offer_and_start`: the other keys of the batch are accepted (or are duplicates) in order,
/// and the planted record is left as it was.
pub async fn an_unreadable_record_is_answered_for_its_key_alone<L: LedgerAdmin>(fx: Fixture<L>) {
    let Some(plant) = plant_of(&fx, "an_unreadable_record_is_answered_for_its_key_alone") else {
        return;
    };
    let (l, p) = (&fx.ledger, fx.policy());
    // Where no record was, and where a queued key's record was.
    plant.plant(&key("bad/new")).await;
    let held = accept(l, &p, "bad/held", None).await;
    plant.plant(&key("bad/held")).await;
    let bad = ["bad/new", "bad/held"];
    let before = raws(&*plant, &bad).await;
    assert!(
        before.iter().all(Option::is_some),
        "the plant wrote: {before:?}"
    );

    // 40 offers: 37 good keys, and the bad ones (one of them twice).
    let names: Vec<String> = (0..40)
        .map(|i| match i {
            7 | 31 => "bad/new".to_owned(),
            30 => "bad/held".to_owned(),
            _ => format!("good/{i:02}"),
        })
        .collect();
    let batch: Vec<Offer> = names.iter().map(|k| offer_of(k, None)).collect();
    let out = l
        .offer(&p, &batch)
        .await
        .expect("a bad key must not fail the batch");
    assert_eq!(out.len(), batch.len(), "one outcome per offer");
    for (name, o) in names.iter().zip(&out) {
        if name.starts_with("bad/") {
            assert!(is_unreadable(o), "{name}: {o:?}");
        } else {
            assert!(matches!(o, Offered::Accepted(_)), "{name}: {o:?}");
        }
    }
    let mut tokens: Vec<Token> = out
        .iter()
        .filter_map(|o| o.lease())
        .map(|l| l.token)
        .collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 37, "37 new tokens: {tokens:?}");
    newer_tokens(
        &fx,
        &tokens,
        &[held.token],
        "new tokens, larger than any before",
    );

    // offer_and_start: new keys start, earlier ones are duplicates, bad ones unreadable.
    let names = ["good/00", "bad/held", "fresh/1", "bad/new", "fresh/2"];
    let batch: Vec<Offer> = names.iter().map(|k| offer_of(k, Some("v1"))).collect();
    let out = l
        .offer_and_start(&p, &batch)
        .await
        .expect("a bad key must not fail the batch");
    assert_eq!(out.len(), batch.len(), "one outcome per offer");
    assert_eq!(out[0], Offered::Duplicate(State::Queued));
    assert!(is_unreadable(&out[1]) && is_unreadable(&out[3]), "{out:?}");
    for i in [2, 4] {
        let lease = out[i].lease().unwrap_or_else(|| panic!("{out:?}"));
        assert_eq!(lease.attempts, 1, "{}: started", names[i]);
    }
    assert_eq!(state(l, "fresh/1").await, Some(State::Running));
    assert_eq!(state(l, "good/39").await, Some(State::Queued));

    assert_eq!(
        raws(&*plant, &bad).await,
        before,
        "the planted records are untouched"
    );
    for k in bad {
        let err = l
            .get(&key(k))
            .await
            .expect_err("get of an unreadable record");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains(k), "names the key: {err}");
    }
}

/// `start`, `renew`, `complete`, `fail` and `release` of a claim on an unreadable record are
/// refused with `Unreadable` for that claim alone, whatever its token: the other claims of
/// each batch go through, and the planted record is left as it was.
pub async fn claims_on_an_unreadable_record_are_refused_alone<L: LedgerAdmin>(fx: Fixture<L>) {
    let Some(plant) = plant_of(&fx, "claims_on_an_unreadable_record_are_refused_alone") else {
        return;
    };
    let (l, p) = (&fx.ledger, fx.policy());
    let q = accept(l, &p, "q", None).await;
    let r = accept(l, &p, "r", None).await;
    start(l, &p, &r).await.expect("start");
    let bq = accept(l, &p, "bad/queued", None).await;
    let br = accept(l, &p, "bad/running", None).await;
    start(l, &p, &br).await.expect("start");
    let bad = ["bad/queued", "bad/running"];
    for k in bad {
        plant.plant(&key(k)).await;
    }
    let before = raws(&*plant, &bad).await;
    let failure = |c: &Claim| Failure {
        claim: c.clone(),
        error: "boom".to_owned(),
    };

    let out = l.start(&p, &[bq.clone(), q.clone()]).await.expect("start");
    assert!(refused_unreadable(&out[0]), "{out:?}");
    assert_eq!(out[1].as_ref().map(|s| s.attempt), Ok(1), "{out:?}");
    let out = l
        .renew(&p, &[q.clone(), br.clone(), r.clone()])
        .await
        .expect("renew");
    assert!(
        out[0].is_ok() && refused_unreadable(&out[1]) && out[2].is_ok(),
        "{out:?}"
    );
    let out = l
        .complete(&[r.clone(), br.clone()])
        .await
        .expect("complete");
    assert_eq!(out[0], Ok(Done { superseded: false }), "{out:?}");
    assert!(refused_unreadable(&out[1]), "{out:?}");
    let out = l
        .fail(&p, &[failure(&br), failure(&q)])
        .await
        .expect("fail");
    assert!(refused_unreadable(&out[0]), "{out:?}");
    assert_eq!(out[1], Ok(Failed::Retry { attempts: 1 }), "{out:?}");
    let out = l.release(&[bq.clone(), q.clone()]).await.expect("release");
    assert!(refused_unreadable(&out[0]), "{out:?}");
    assert_eq!(out[1], Ok(()), "{out:?}");

    // Whatever the token: the ledger cannot read the one the record holds.
    for token in [bq.token, br.token, Token::new(1), Token::new(u64::MAX >> 2)] {
        let claim = Claim {
            key: key("bad/queued"),
            token,
        };
        let out = l
            .start(&p, std::slice::from_ref(&claim))
            .await
            .expect("start");
        assert!(refused_unreadable(&out[0]), "token {token}: {out:?}");
        let out = l
            .release(std::slice::from_ref(&claim))
            .await
            .expect("release");
        assert!(refused_unreadable(&out[0]), "token {token}: {out:?}");
    }
    assert_eq!(
        raws(&*plant, &bad).await,
        before,
        "the planted records are untouched"
    );
    assert_eq!(state(l, "r").await, Some(State::Completed));
    assert_eq!(state(l, "q").await, None, "released");
}

/// An unreadable record blocks its key until someone removes it with `force`; the other
/// administration calls fail naming the key, and change nothing.
pub async fn a_forced_remove_repairs_an_unreadable_record<L: LedgerAdmin>(fx: Fixture<L>) {
    let Some(plant) = plant_of(&fx, "a_forced_remove_repairs_an_unreadable_record") else {
        return;
    };
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    completed(l, &p, "done", None).await;
    dead(l, &p, "dead", None).await;
    let held = accept(l, &p, "bad/queued", None).await;
    let running = accept(l, &p, "bad/running", None).await;
    start(l, &p, &running).await.expect("start");
    completed(l, &p, "bad/completed", None).await;
    let bad = ["bad/queued", "bad/running", "bad/completed", "bad/new"];
    for k in bad {
        plant.plant(&key(k)).await;
    }
    let before = raws(&*plant, &bad).await;
    for k in bad {
        let err = l
            .remove(&[key("done"), key(k)], false)
            .await
            .expect_err("remove without force of an unreadable record");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains(k), "names the key: {err}");
        let err = l
            .retry(&[key("dead"), key(k)])
            .await
            .expect_err("retry of an unreadable record");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains(k), "names the key: {err}");
    }
    assert_eq!(raws(&*plant, &bad).await, before, "nothing was changed");
    assert_eq!(state(l, "done").await, Some(State::Completed));
    assert_eq!(state(l, "dead").await, Some(State::Dead));

    let mut keys: Vec<Key> = bad.iter().map(|k| key(k)).collect();
    keys.insert(2, key("done"));
    keys.push(key("absent"));
    let out = l.remove(&keys, true).await.expect("forced remove");
    assert_eq!(
        out,
        vec![
            Removed::Removed,
            Removed::Removed,
            Removed::Removed,
            Removed::Removed,
            Removed::Removed,
            Removed::NotFound
        ]
    );
    assert_eq!(
        raws(&*plant, &bad).await,
        vec![None; bad.len()],
        "a forced remove deletes what was there"
    );
    // Nothing is left of them, in any index: the key is new again.
    let s = l.stats().await.expect("stats");
    assert_eq!(
        (s.queued, s.running, s.completed, s.dead, s.expired),
        (0, 0, 0, 1, 0),
        "{s:?}"
    );
    for st in State::ALL {
        let page = l.list(&ListQuery::new(st)).await.expect("list");
        let keys: Vec<&str> = page.records.iter().map(|r| r.key.as_str()).collect();
        let want: &[&str] = if st == State::Dead { &["dead"] } else { &[] };
        assert_eq!(keys, want, "{st}");
    }
    let again = accept(l, &p, "bad/queued", None).await;
    assert!(again.token > held.token, "tokens keep growing");
    assert_eq!(state(l, "bad/queued").await, Some(State::Queued));
}

/// The trait's cancel-safety promise: a call dropped mid-flight leaves each item of its batch
/// either fully applied or not applied at all. Offers of 500 fresh keys, and completions of
/// 500 running ones, are dropped after a growing delay; afterwards every key is in the state
/// before or after its transition, with a lease (or an ending) that works, and the counts
/// agree.
pub async fn dropped_calls_apply_each_item_whole_or_not_at_all<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    for (round, micros) in [0u64, 50, 200, 1_000, 5_000].into_iter().enumerate() {
        let keys: Vec<Offer> = (0..500)
            .map(|i| offer_of(&format!("drop-{round}/{i:03}"), None))
            .collect();
        let wait = std::time::Duration::from_micros(micros);
        let _ = tokio::time::timeout(wait, l.offer(&p, &keys)).await;
        // Whatever a ledger finishes in the background (a writer thread) lands meanwhile.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // Offered again: applied items are Queued duplicates, the others are accepted now.
        let again = l.offer(&p, &keys).await.expect("offer again");
        let mut claims = Vec::new();
        for (o, offer) in again.iter().zip(&keys) {
            match o {
                Offered::Duplicate(State::Queued) => {}
                Offered::Accepted(lease) => claims.push(Claim {
                    key: offer.key.clone(),
                    token: lease.token,
                }),
                other => panic!("{:?} after a dropped offer: {other:?}", offer.key),
            }
        }
        // Every key is Queued now, whichever offer won; the dropped call's leases are whole.
        for offer in &keys {
            let r = l.get(&offer.key).await.expect("get").expect("a record");
            assert_eq!(r.state, State::Queued, "{:?}", offer.key);
            assert!(r.expires_at.is_some(), "a whole lease: {r:?}");
        }
        // The keys this round accepted now: start them, drop their completion mid-flight.
        if claims.is_empty() {
            continue;
        }
        let started = l.start(&p, &claims).await.expect("start");
        assert!(started.iter().all(Result::is_ok));
        let _ = tokio::time::timeout(wait, l.complete(&claims)).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let done = l.complete(&claims).await.expect("complete again");
        for (d, c) in done.iter().zip(&claims) {
            // Applied by the dropped call (then completed under this very token), or now.
            assert!(
                matches!(d, Ok(_) | Err(Refused::WrongState(State::Completed))),
                "{:?}: {d:?}",
                c.key
            );
            let r = l.get(&c.key).await.expect("get").expect("a record");
            assert_eq!(
                (r.state, r.token),
                (State::Completed, c.token),
                "{:?}",
                c.key
            );
        }
    }
    let stats = l.stats().await.expect("stats");
    let listed = count_listed(l).await;
    assert_eq!(stats.total(), listed, "stats agree with list: {stats:?}");
}

async fn count_listed<L: LedgerAdmin>(l: &L) -> u64 {
    let mut n = 0;
    for state in State::ALL {
        let mut q = ListQuery::new(state).limit(1000);
        loop {
            let page = l.list(&q).await.expect("list");
            n += page.records.len() as u64;
            match page.next {
                Some(k) => q = q.after(k),
                None => break,
            }
        }
    }
    n
}
