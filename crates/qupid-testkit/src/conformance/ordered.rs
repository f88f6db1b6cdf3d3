//! Ordered versions: an offer older than the newest version the ledger accepted for its key
//! is refused as `Outdated` whatever the state, lease and policy, and changes nothing; equal,
//! newer, opaque, mixed and missing versions keep the rules of the other tests.

use qupid::ledger::{Done, Offered, Record, State};
use qupid::{Blocking, LedgerAdmin, NewerVersions, Offer, Policy, Version};

use super::{accept, complete, dead, key, offer, offer_of, one, renew, start, state};
use crate::Fixture;

/// The stored form of `Version::ordered(n)`, as the suite's helpers take versions.
fn o(n: u64) -> String {
    Version::ordered(n).as_str().to_owned()
}

fn ordered(k: &str, n: u64) -> Offer {
    offer_of(k, Some(&o(n)))
}

async fn record<L: LedgerAdmin>(l: &L, k: &str) -> Record {
    l.get(&key(k)).await.expect("get").expect("a record")
}

/// `offer`, then `offer_and_start`, of one key: both must answer `want`.
async fn both_answer<L: LedgerAdmin>(l: &L, p: &Policy, o: Offer, want: &Offered, what: &str) {
    assert_eq!(
        &one(l.offer(p, std::slice::from_ref(&o))).await,
        want,
        "offer: {what}"
    );
    assert_eq!(
        &one(l.offer_and_start(p, &[o])).await,
        want,
        "offer_and_start: {what}"
    );
}

/// Completed / Dead at an ordered version → offer of an older one → `Outdated(state)`, by
/// `offer` and `offer_and_start` alike; the record is left exactly as it was. The same
/// version is still a duplicate, a newer one is processed again.
pub async fn outdated_offers_of_finished_keys_are_refused<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    super::completed(l, &p, "c", Some(&o(5))).await;
    dead(l, &p, "d", Some(&o(5))).await;
    for (k, st) in [("c", State::Completed), ("d", State::Dead)] {
        let before = record(l, k).await;
        for n in [0, 1, 4] {
            let what = format!("{k}: version {n} after 5");
            both_answer(l, &p, ordered(k, n), &Offered::Outdated(st), &what).await;
        }
        assert_eq!(
            record(l, k).await,
            before,
            "{k}: outdated offers change nothing"
        );
        assert_eq!(
            offer(l, &p, k, Some(&o(5))).await,
            Offered::Duplicate(st),
            "{k}: the same version"
        );
        let Offered::Accepted(lease) = offer(l, &p, k, Some(&o(6))).await else {
            panic!("{k}: a newer version is processed again")
        };
        assert_eq!(lease.attempts, 0, "{k}: afresh");
        assert_eq!(record(l, k).await.version, Some(Version::ordered(6)));
    }
    let s = l.stats().await.expect("stats");
    assert_eq!((s.queued, s.completed, s.dead), (2, 0, 0), "{s:?}");
    // Numbers that differ only in their high digits, or only in their last, and past 2^53.
    let large = [
        (10_000_000_000, 9_999_999_999),
        (20_000_000_001, 10_000_000_002),
        ((1 << 53) + 1, 1 << 53),
        (u64::MAX, u64::MAX - 1),
    ];
    for (i, (newest, older)) in large.into_iter().enumerate() {
        let k = format!("large/{i}");
        super::completed(l, &p, &k, Some(&o(newest))).await;
        let what = format!("{older} after {newest}");
        both_answer(
            l,
            &p,
            ordered(&k, older),
            &Offered::Outdated(State::Completed),
            &what,
        )
        .await;
        assert_eq!(
            offer(l, &p, &k, Some(&o(newest))).await,
            Offered::Duplicate(State::Completed),
            "{newest}"
        );
    }
}

/// An older ordered version is refused even where the finished key does not block: its state
/// is not in the blocking set, or its window passed. The same version is then accepted.
pub async fn outdated_offers_are_refused_whatever_the_blocking_policy<L: LedgerAdmin>(
    fx: Fixture<L>,
) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    p.completed = Blocking::Never;
    p.dead = Blocking::Never;
    super::completed(l, &p, "c", Some(&o(5))).await;
    dead(l, &p, "d", Some(&o(5))).await;
    let mut windowed = p.clone();
    windowed.completed = Blocking::For(fx.ticks(2));
    windowed.dead = Blocking::For(fx.ticks(2));
    super::completed(l, &windowed, "cw", Some(&o(5))).await;
    dead(l, &windowed, "dw", Some(&o(5))).await;
    fx.advance(3).await;
    let cases = [
        ("c", State::Completed, &p),
        ("d", State::Dead, &p),
        ("cw", State::Completed, &windowed),
        ("dw", State::Dead, &windowed),
    ];
    for (k, st, policy) in cases {
        let before = record(l, k).await;
        let what = format!("{k}: not blocking, version 4 after 5");
        both_answer(l, policy, ordered(k, 4), &Offered::Outdated(st), &what).await;
        assert_eq!(record(l, k).await, before, "{k}: nothing changed");
        assert!(
            matches!(offer(l, policy, k, Some(&o(5))).await, Offered::Accepted(_)),
            "{k}: the same version is not blocked"
        );
    }
}

/// Queued / Running with a valid lease → offer of an older ordered version →
/// `Outdated(state)`: the holder keeps its lease and nothing is remembered.
pub async fn outdated_offers_of_leased_keys_are_refused<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let q = accept(l, &p, "q", Some(&o(5))).await;
    let r = accept(l, &p, "r", Some(&o(5))).await;
    start(l, &p, &r).await.expect("start");
    fx.advance(5).await;
    for (k, st) in [("q", State::Queued), ("r", State::Running)] {
        let before = record(l, k).await;
        both_answer(l, &p, ordered(k, 3), &Offered::Outdated(st), k).await;
        let after = record(l, k).await;
        assert_eq!(after, before, "{k}: nothing changed");
        assert_eq!(
            after.newer_version, None,
            "{k}: an older version is not remembered"
        );
    }
    assert_eq!(record(l, "q").await.token, q.token);
    assert_eq!(
        offer(l, &p, "r", Some(&o(5))).await,
        Offered::Duplicate(State::Running),
        "the same version"
    );
    assert_eq!(record(l, "r").await.newer_version, None);
    assert_eq!(
        offer(l, &p, "r", Some(&o(7))).await,
        Offered::Duplicate(State::Running),
        "a newer version"
    );
    assert_eq!(
        record(l, "r").await.newer_version,
        Some(Version::ordered(7)),
        "a newer version is remembered"
    );
    assert_eq!(complete(l, &r).await, Ok(Done { superseded: true }));
}

/// Queued / Running with an expired lease → offer of an older ordered version →
/// `Outdated(state)`: no takeover, no new token, no abandonment counted (even where the
/// crash cap would send the key Dead), and the old holder keeps its lease. The next offer of
/// a version that is not older takes the lease over as usual.
pub async fn outdated_offers_do_not_take_expired_leases_over<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let mut capped = p.clone();
    capped.crash_cap = 1;
    accept(l, &p, "q", Some(&o(5))).await;
    let r = accept(l, &p, "r", Some(&o(5))).await;
    start(l, &p, &r).await.expect("start");
    fx.advance(11).await;
    for (k, st) in [("q", State::Queued), ("r", State::Running)] {
        let before = record(l, k).await;
        for policy in [&p, &capped] {
            let what = format!("{k}: expired, crash cap {}", policy.crash_cap);
            both_answer(l, policy, ordered(k, 4), &Offered::Outdated(st), &what).await;
        }
        assert_eq!(record(l, k).await, before, "{k}: nothing changed");
    }
    let s = l.stats().await.expect("stats");
    assert_eq!((s.queued, s.running, s.expired), (1, 1, 2), "{s:?}");
    // The old holder still holds the key.
    renew(l, &p, &r)
        .await
        .expect("the holder keeps its token after an outdated offer");
    fx.advance(11).await;
    let Offered::Accepted(lease) = offer(l, &p, "r", Some(&o(5))).await else {
        panic!("the same version takes an expired lease over")
    };
    assert!(lease.token > r.token);
    let rec = record(l, "r").await;
    assert_eq!(
        (rec.state, rec.abandoned, rec.attempts),
        (State::Queued, 1, 1)
    );
    assert_eq!(
        complete(l, &r).await,
        Err(qupid::ledger::Refused::LeaseLost)
    );
}

/// While in flight with a newer version remembered, an offer of any version older than the
/// remembered one — between it and the running one, or the running one itself — is
/// `Outdated` and the remembered version stays; an equal one is a duplicate, a newer one is
/// remembered instead. The same holds when the running version is opaque and the remembered
/// one ordered. On completion the key is superseded: processed again at the newer version.
pub async fn a_remembered_newer_version_is_kept_over_older_offers<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let c = accept(l, &p, "k", Some(&o(5))).await;
    start(l, &p, &c).await.expect("start");
    let running = Offered::Duplicate(State::Running);
    assert_eq!(offer(l, &p, "k", Some(&o(8))).await, running);
    let before = record(l, "k").await;
    assert_eq!(before.newer_version, Some(Version::ordered(8)));
    for n in [6, 7, 5, 2] {
        let what = format!("version {n}, running 5, remembered 8");
        both_answer(
            l,
            &p,
            ordered("k", n),
            &Offered::Outdated(State::Running),
            &what,
        )
        .await;
    }
    assert_eq!(record(l, "k").await, before, "the newer version is kept");
    assert_eq!(offer(l, &p, "k", Some(&o(8))).await, running, "equal");
    assert_eq!(offer(l, &p, "k", Some(&o(9))).await, running, "newer");
    let rec = record(l, "k").await;
    assert_eq!(
        (rec.version, rec.newer_version),
        (Some(Version::ordered(5)), Some(Version::ordered(9)))
    );
    assert_eq!(complete(l, &c).await, Ok(Done { superseded: true }));
    let Offered::Accepted(_) = offer(l, &p, "k", Some(&o(9))).await else {
        panic!("the remembered version is processed after the running one completes")
    };

    // An opaque running version, an ordered remembered one.
    let m = accept(l, &p, "m", Some("etag")).await;
    start(l, &p, &m).await.expect("start");
    assert_eq!(offer(l, &p, "m", Some(&o(8))).await, running, "mixed");
    assert_eq!(
        offer(l, &p, "m", Some(&o(6))).await,
        Offered::Outdated(State::Running),
        "older than the remembered ordered version"
    );
    let rec = record(l, "m").await;
    assert_eq!(rec.version.as_ref().map(Version::as_str), Some("etag"));
    assert_eq!(rec.newer_version, Some(Version::ordered(8)));
}

/// The same ordered version, a newer one, an opaque one against an ordered one (either way),
/// and no version keep the rules of the other tests; `NewerVersions::Ignore` keeps ignoring
/// newer versions but still refuses older ones.
pub async fn same_newer_opaque_and_unversioned_offers_keep_their_rules<L: LedgerAdmin>(
    fx: Fixture<L>,
) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    let completed = Offered::Duplicate(State::Completed);
    super::completed(l, &p, "c", Some(&o(5))).await;
    assert_eq!(offer(l, &p, "c", Some(&o(5))).await, completed, "same");
    assert_eq!(offer(l, &p, "c", None).await, completed, "none");
    for (k, done, offered) in [
        ("newer", Some(o(5)), Some(o(6))),
        ("opaque-after-ordered", Some(o(5)), Some("etag".to_owned())),
        ("ordered-after-opaque", Some("etag".to_owned()), Some(o(1))),
        ("ordered-after-none", None, Some(o(1))),
    ] {
        super::completed(l, &p, k, done.as_deref()).await;
        let out = offer(l, &p, k, offered.as_deref()).await;
        assert!(matches!(out, Offered::Accepted(_)), "{k}: {out:?}");
    }
    dead(l, &p, "d", Some(&o(5))).await;
    assert!(matches!(
        offer(l, &p, "d", Some(&o(6))).await,
        Offered::Accepted(_)
    ));

    // In flight: no version and an opaque one are duplicates, the opaque one remembered.
    let r = accept(l, &p, "r", Some(&o(5))).await;
    start(l, &p, &r).await.expect("start");
    let running = Offered::Duplicate(State::Running);
    assert_eq!(offer(l, &p, "r", None).await, running);
    assert_eq!(record(l, "r").await.newer_version, None);
    assert_eq!(offer(l, &p, "r", Some("etag")).await, running);
    assert_eq!(
        record(l, "r")
            .await
            .newer_version
            .as_ref()
            .map(Version::as_str),
        Some("etag")
    );
    assert_eq!(
        offer(l, &p, "r", Some(&o(4))).await,
        Offered::Outdated(State::Running),
        "still older than the running version"
    );

    // Ignore: a newer ordered version is not remembered; an older one is still refused.
    let mut ignore = p.clone();
    ignore.newer_versions = NewerVersions::Ignore;
    let i = accept(l, &ignore, "i", Some(&o(5))).await;
    start(l, &ignore, &i).await.expect("start");
    assert_eq!(offer(l, &ignore, "i", Some(&o(7))).await, running);
    assert_eq!(record(l, "i").await.newer_version, None);
    assert_eq!(
        offer(l, &ignore, "i", Some(&o(3))).await,
        Offered::Outdated(State::Running)
    );
    assert_eq!(complete(l, &i).await, Ok(Done { superseded: false }));

    // Expired: the same version, and no version, take the lease over as usual.
    let e = accept(l, &p, "e", Some(&o(5))).await;
    let n = accept(l, &p, "n", Some(&o(5))).await;
    fx.advance(11).await;
    for (k, v, old) in [("e", Some(o(5)), &e), ("n", None, &n)] {
        let Offered::Accepted(lease) = offer(l, &p, k, v.as_deref()).await else {
            panic!("{k}: an expired lease is taken over")
        };
        assert!(lease.token > old.token, "{k}");
    }
    assert_eq!(record(l, "n").await.version, None, "the takeover's version");
}

/// A batch mixing outdated, equal, newer, opaque and new offers is answered item by item,
/// in order, by `offer` and by `offer_and_start`.
pub async fn batches_answer_ordered_versions_in_order<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, mut p) = (&fx.ledger, fx.policy());
    p.max_attempts = 1;
    for (round, start_too) in [("o", false), ("s", true)] {
        let k = |name: &str| format!("{round}/{name}");
        super::completed(l, &p, &k("done"), Some(&o(5))).await;
        dead(l, &p, &k("dead"), Some(&o(5))).await;
        accept(l, &p, &k("held"), Some(&o(4))).await;
        super::completed(l, &p, &k("opaque"), Some("etag")).await;
        let batch = [
            ordered(&k("done"), 3),
            ordered(&k("new"), 1),
            ordered(&k("held"), 2),
            ordered(&k("done"), 5),
            ordered(&k("held"), 9),
            ordered(&k("dead"), 7),
            ordered(&k("opaque"), 1),
            ordered(&k("dead"), 6),
            offer_of(&k("none"), None),
        ];
        let out = if start_too {
            l.offer_and_start(&p, &batch).await
        } else {
            l.offer(&p, &batch).await
        }
        .expect("offer");
        assert_eq!(out.len(), batch.len(), "{round}: one outcome per offer");
        let fresh = if start_too {
            State::Running
        } else {
            State::Queued
        };
        let accepted = |i: usize| matches!(out[i], Offered::Accepted(_));
        assert_eq!(
            out[0],
            Offered::Outdated(State::Completed),
            "{round}: {out:?}"
        );
        assert!(accepted(1), "{round}: {out:?}");
        assert_eq!(out[2], Offered::Outdated(State::Queued), "{round}: {out:?}");
        assert_eq!(
            out[3],
            Offered::Duplicate(State::Completed),
            "{round}: {out:?}"
        );
        assert_eq!(
            out[4],
            Offered::Duplicate(State::Queued),
            "{round}: {out:?}"
        );
        assert!(accepted(5), "{round}: a newer version: {out:?}");
        assert!(accepted(6), "{round}: mixed: {out:?}");
        assert_eq!(
            out[7],
            Offered::Outdated(fresh),
            "{round}: older than the version item 5 accepted: {out:?}"
        );
        assert!(accepted(8), "{round}: {out:?}");
        assert_eq!(state(l, &k("new")).await, Some(fresh));
        let dead_rec = record(l, &k("dead")).await;
        assert_eq!(
            (dead_rec.state, dead_rec.version),
            (fresh, Some(Version::ordered(7)))
        );
        assert_eq!(
            record(l, &k("held")).await.newer_version,
            Some(Version::ordered(9))
        );
    }
}

/// A key twice in one batch with two ordered versions: the second copy is answered against
/// what the first did — older than the first copy's version: `Outdated`; newer: a duplicate
/// whose version is remembered.
pub async fn a_key_twice_in_a_batch_with_ordered_versions<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, &fx.policy());
    for start_too in [false, true] {
        let call = |batch: Vec<Offer>| async move {
            if start_too {
                l.offer_and_start(p, &batch).await
            } else {
                l.offer(p, &batch).await
            }
            .expect("offer")
        };
        let round = if start_too { "s" } else { "o" };
        let fresh = if start_too {
            State::Running
        } else {
            State::Queued
        };
        let k = |name: &str| format!("{round}/{name}");

        let out = call(vec![ordered(&k("down"), 2), ordered(&k("down"), 1)]).await;
        assert!(matches!(out[0], Offered::Accepted(_)), "{round}: {out:?}");
        assert_eq!(out[1], Offered::Outdated(fresh), "{round}: {out:?}");
        let rec = record(l, &k("down")).await;
        assert_eq!(
            (rec.version, rec.newer_version),
            (Some(Version::ordered(2)), None)
        );

        let out = call(vec![ordered(&k("up"), 1), ordered(&k("up"), 2)]).await;
        assert!(matches!(out[0], Offered::Accepted(_)), "{round}: {out:?}");
        assert_eq!(out[1], Offered::Duplicate(fresh), "{round}: {out:?}");
        let rec = record(l, &k("up")).await;
        assert_eq!(
            (rec.version, rec.newer_version),
            (Some(Version::ordered(1)), Some(Version::ordered(2)))
        );

        // A finished key: the first copy reprocesses it at a newer version, which the
        // second copy's (the finished one's) is then older than.
        super::completed(l, p, &k("done"), Some(&o(5))).await;
        let out = call(vec![ordered(&k("done"), 6), ordered(&k("done"), 5)]).await;
        assert!(matches!(out[0], Offered::Accepted(_)), "{round}: {out:?}");
        assert_eq!(out[1], Offered::Outdated(fresh), "{round}: {out:?}");
        assert_eq!(
            record(l, &k("done")).await.version,
            Some(Version::ordered(6))
        );
    }
}
