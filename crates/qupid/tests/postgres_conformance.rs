//! The conformance suite and the model-based test, on the PostgreSQL ledger, plus what only
//! a server shows: batches naming a key several times, purging in chunks, paging through
//! many keys, and concurrent writers of the same rows.
//!
//! Needs a PostgreSQL server (see `postgres_support`); each test works in its own namespace
//! (a schema), dropped when the test passes and kept when it fails.

#![cfg(feature = "postgres")]

mod postgres_support;

use std::sync::Arc;

use postgres_support::{fixture, model_fixture};
use qupid::ledger::{
    Claim, Done, Failed, Failure, ListQuery, Offered, Purged, Refused, Removed, State,
};
use qupid::{Keep, Key, LedgerAdmin, Offer, Retention, Version};
use qupid_testkit::{memory_fixture, Fixture};

qupid_testkit::conformance_tests!(fixture);
qupid_testkit::model_test!(model_fixture, 32);

/// Runs each test below on the PostgreSQL ledger and, to show the answers it checks are the
/// reference semantics, on the memory ledger.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::fixture().await).await;
                }
            )*
        }
        mod on_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::memory_fixture().await).await;
                }
            )*
        }
    };
}

both!(
    a_key_named_twice_in_a_batch_is_applied_in_order,
    a_reclaimed_lease_keeps_attempts_and_error,
    purge_removes_more_than_one_chunk,
    list_pages_through_many_keys_in_byte_order,
    concurrent_writers_of_the_same_rows_agree,
);

fn key(k: &str) -> Key {
    Key::new(k).expect("valid key")
}

fn offer(k: &str, v: Option<&str>) -> Offer {
    Offer {
        key: key(k),
        version: v.map(|v| Version::new(v).expect("valid version")),
    }
}

/// Offers, starts and completes `keys` in one batch per call.
async fn complete_all<L: LedgerAdmin>(l: &L, p: &qupid::Policy, keys: &[String]) {
    let offers: Vec<Offer> = keys.iter().map(|k| offer(k, None)).collect();
    let claims: Vec<Claim> = l
        .offer(p, &offers)
        .await
        .expect("offer")
        .iter()
        .zip(&offers)
        .map(|(o, offer)| match o {
            Offered::Accepted(lease) => Claim {
                key: offer.key.clone(),
                token: lease.token,
            },
            other => panic!("{:?} should be accepted, was {other:?}", offer.key),
        })
        .collect();
    let started = l.start(p, &claims).await.expect("start");
    assert!(started.iter().all(Result::is_ok), "all start");
    let done = l.complete(&claims).await.expect("complete");
    assert!(done.iter().all(Result::is_ok), "all complete");
}

/// Copies of a key in one batch are answered as if they came one after another.
async fn a_key_named_twice_in_a_batch_is_applied_in_order<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let out = l
        .offer(
            &p,
            &[
                offer("k", Some("v1")),
                offer("j", None),
                offer("k", Some("v2")),
                offer("k", Some("v3")),
            ],
        )
        .await
        .expect("offer");
    let Offered::Accepted(lease) = out[0] else {
        panic!("the first copy is accepted: {out:?}")
    };
    assert!(matches!(out[1], Offered::Accepted(_)));
    assert_eq!(out[2], Offered::Duplicate(State::Queued));
    assert_eq!(out[3], Offered::Duplicate(State::Queued));
    let rec = l.get(&key("k")).await.expect("get").expect("record");
    assert_eq!(rec.version.as_ref().map(Version::as_str), Some("v1"));
    assert_eq!(
        rec.newer_version.as_ref().map(Version::as_str),
        Some("v3"),
        "the last newer version seen is remembered"
    );
    let c = Claim {
        key: key("k"),
        token: lease.token,
    };
    let started = l.start(&p, &[c.clone(), c.clone()]).await.expect("start");
    assert_eq!(started[0].as_ref().map(|s| s.attempt), Ok(1));
    assert_eq!(started[1], Err(Refused::WrongState(State::Running)));
    let done = l.complete(&[c.clone(), c.clone()]).await.expect("complete");
    assert_eq!(done[0], Ok(Done { superseded: true }));
    assert_eq!(done[1], Err(Refused::WrongState(State::Completed)));
    let removed = l
        .remove(&[key("k"), key("k")], false)
        .await
        .expect("remove");
    assert_eq!(removed, vec![Removed::Removed, Removed::NotFound]);
}

/// A purge larger than one chunk (5,000 records per statement on PostgreSQL).
async fn purge_removes_more_than_one_chunk<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    // 12,000 records in six batches, each finishing one tick after the previous one.
    for batch in 0..6 {
        let keys: Vec<String> = (0..2000)
            .map(|i| format!("k{:05}", batch * 2000 + i))
            .collect();
        complete_all(l, &p, &keys).await;
        fx.advance(1).await;
    }
    assert_eq!(l.stats().await.expect("stats").completed, 12_000);
    let retention = Retention {
        completed: Keep::newest(1000),
        dead: Keep::FOREVER,
    };
    let purged = l.purge(&retention).await.expect("purge");
    assert_eq!(purged.completed, 11_000, "three chunks of up to 5,000");
    assert_eq!(l.stats().await.expect("stats").completed, 1000);
    let page = l
        .list(&ListQuery::new(State::Completed).limit(1))
        .await
        .expect("list");
    assert_eq!(page.records[0].key.as_str(), "k11000");
    assert_eq!(l.purge(&retention).await.expect("purge"), Purged::default());
    let by_age = Retention {
        completed: Keep::younger_than(fx.ticks(1)),
        dead: Keep::FOREVER,
    };
    assert_eq!(l.purge(&by_age).await.expect("purge").completed, 1000);
}

async fn list_pages_through_many_keys_in_byte_order<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let mut keys: Vec<String> = (0..3000).map(|i| format!("{}/{i}", i % 7)).collect();
    keys.push("é".to_owned());
    keys.push("z\u{0}".to_owned());
    keys.push("z".to_owned());
    complete_all(l, &p, &keys).await;
    keys.sort();
    let mut seen = Vec::new();
    let mut q = ListQuery::new(State::Completed).limit(256);
    loop {
        let page = l.list(&q).await.expect("list");
        seen.extend(page.records.iter().map(|r| r.key.as_str().to_owned()));
        match page.next {
            Some(next) => q = q.after(next),
            None => break,
        }
    }
    assert_eq!(seen, keys);
}

/// Workers complete and fail keys while others offer the same keys again and again: every
/// answer stays consistent with one order of events, and every key ends Completed once.
async fn concurrent_writers_of_the_same_rows_agree<L: LedgerAdmin + Clone>(fx: Fixture<L>) {
    let p = Arc::new(fx.policy());
    let keys: Arc<Vec<String>> = Arc::new((0..400).map(|i| format!("c{i:03}")).collect());
    let mut tasks = Vec::new();
    for t in 0..6 {
        let (l, p, keys) = (fx.ledger.clone(), p.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut completed = 0;
            for round in 0..8 {
                let mut order: Vec<&String> = keys.iter().collect();
                order.rotate_left((t * 67 + round * 13) % keys.len());
                for chunk in order.chunks(40 + t * 9) {
                    let offers: Vec<Offer> = chunk.iter().map(|k| offer(k, None)).collect();
                    let out = l.offer(&p, &offers).await.expect("offer");
                    let claims: Vec<Claim> = out
                        .iter()
                        .zip(&offers)
                        .filter_map(|(o, of)| {
                            o.lease().map(|lease| Claim {
                                key: of.key.clone(),
                                token: lease.token,
                            })
                        })
                        .collect();
                    if claims.is_empty() {
                        continue;
                    }
                    let started = l.start(&p, &claims).await.expect("start");
                    assert!(started.iter().all(Result::is_ok), "a fresh lease starts");
                    let done = l.complete(&claims).await.expect("complete");
                    assert!(done.iter().all(Result::is_ok), "nobody else holds it");
                    completed += claims.len();
                }
            }
            completed
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    assert_eq!(total, keys.len(), "each key completed exactly once");
    let stats = fx.ledger.stats().await.expect("stats");
    assert_eq!(stats.completed, keys.len() as u64);
    assert_eq!(stats.total(), keys.len() as u64);
}

/// Taking over an expired lease keeps the attempts made and the last error, and counts the
/// expiry; a fresh lease on a finished key starts from nothing.
async fn a_reclaimed_lease_keeps_attempts_and_error<L: LedgerAdmin>(fx: Fixture<L>) {
    let (l, p) = (&fx.ledger, fx.policy());
    let Offered::Accepted(lease) = l.offer(&p, &[offer("k", Some("v1"))]).await.expect("offer")[0]
    else {
        panic!("accepted")
    };
    let c = Claim {
        key: key("k"),
        token: lease.token,
    };
    l.start(&p, std::slice::from_ref(&c)).await.expect("start")[0]
        .as_ref()
        .expect("started");
    let failed = l
        .fail(
            &p,
            &[Failure {
                claim: c.clone(),
                error: "nul\0 and ünïcode".to_owned(),
            }],
        )
        .await
        .expect("fail");
    assert_eq!(failed[0], Ok(Failed::Retry { attempts: 1 }));
    fx.advance(11).await;
    let Offered::Accepted(again) = l.offer(&p, &[offer("k", None)]).await.expect("offer")[0] else {
        panic!("an expired lease is taken over")
    };
    assert_eq!(again.attempts, 1);
    let rec = l.get(&key("k")).await.expect("get").expect("record");
    assert_eq!(
        (rec.state, rec.attempts, rec.abandoned),
        (State::Queued, 1, 1)
    );
    assert_eq!(
        rec.version, None,
        "the taker's version replaces the old one"
    );
    assert_eq!(rec.last_error.as_deref(), Some("nul\0 and ünïcode"));
    assert_eq!(rec.token, again.token);
}
