//! The conformance suite and the model-based test, on the Redis ledger, plus what only a
//! large namespace shows (purging in chunks, paging through many keys).
//!
//! Needs a Redis server (see `redis_support`); each test works in its own namespace, deleted
//! when the test passes and kept when it fails.

#![cfg(feature = "redis")]

mod redis_support;

use qupid::ledger::{Claim, ListQuery, Offered, State};
use qupid::{Keep, Key, Ledger, LedgerAdmin, Offer, Retention};
use redis_support::{fixture, model_fixture};

qupid_testkit::conformance_tests!(fixture);
qupid_testkit::model_test!(model_fixture, 64);

/// Offers, starts and completes `keys` in one batch per call.
async fn complete_all<L: LedgerAdmin>(l: &L, p: &qupid::Policy, keys: &[String]) {
    let offers: Vec<Offer> = keys
        .iter()
        .map(|k| Offer::new(Key::new(k).expect("valid key")))
        .collect();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_more_than_one_chunk() {
    let fx = fixture().await;
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
    assert_eq!(purged.completed, 11_000, "eleven chunks of up to 1,000");
    assert_eq!(l.stats().await.expect("stats").completed, 1000);
    // The newest batch finished at one instant, so ties are broken by key: the largest stay.
    let page = l
        .list(&ListQuery::new(State::Completed).limit(1))
        .await
        .expect("list");
    assert_eq!(page.records[0].key.as_str(), "k11000");
    assert_eq!(
        l.purge(&retention).await.expect("purge"),
        qupid::ledger::Purged::default(),
        "nothing more to do"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_many_keys_in_byte_order() {
    let fx = fixture().await;
    let (l, p) = (&fx.ledger, fx.policy());
    let mut keys: Vec<String> = (0..3000).map(|i| format!("{}/{i}", i % 7)).collect();
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

/// More keys in flight than one stats script reads (2,000): the expired leases are counted
/// over several scripts, across both leased states, by the first script's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_expired_leases_over_several_scripts() {
    let fx = fixture().await;
    let (l, p) = (&fx.ledger, fx.policy());
    let offers = |from: usize, to: usize| -> Vec<Offer> {
        (from..to)
            .map(|i| Offer::new(Key::new(format!("k{i:05}")).expect("valid key")))
            .collect()
    };
    let queued = l.offer(&p, &offers(0, 3000)).await.expect("offer");
    assert!(queued.iter().all(|o| o.lease().is_some()));
    let batch = offers(3000, 5500);
    let running = l
        .offer_and_start(&p, &batch)
        .await
        .expect("offer and start");
    let s = l.stats().await.expect("stats");
    assert_eq!((s.queued, s.running, s.expired), (3000, 2500, 0), "{s:?}");
    fx.advance(11).await;
    let s = l.stats().await.expect("stats");
    assert_eq!(
        (s.queued, s.running, s.expired),
        (3000, 2500, 5500),
        "{s:?}"
    );
    // Renew a thousand of the running keys: they no longer count.
    let claims: Vec<Claim> = batch
        .iter()
        .zip(&running)
        .take(1000)
        .map(|(o, r)| Claim {
            key: o.key.clone(),
            token: r.lease().expect("accepted").token,
        })
        .collect();
    let renewed = l.renew(&p, &claims).await.expect("renew");
    assert!(renewed.iter().all(Result::is_ok));
    assert_eq!(l.stats().await.expect("stats").expired, 4500);
}
