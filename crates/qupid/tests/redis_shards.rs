//! The Redis ledger with a namespace split into shards, on one server: the conformance suite
//! and the model-based test (every batch split over the shards and answered in order, `list`
//! merged, `stats` summed, `purge` by count cut across shards), and the shard count kept by
//! the namespace. The same suite runs on a Redis Cluster in `redis_cluster`.
//!
//! Needs a Redis server (see `redis_support`).

#![cfg(feature = "redis")]

mod redis_support;

use qupid::ledger::{Claim, Offered, RedisLedger};
use qupid::{ErrorKind, Keep, Key, Ledger, LedgerAdmin, Offer, Policy, Retention};
use redis_support::{make_sharded_fixture, namespace, url, Cleanup};

async fn fixture() -> qupid_testkit::Fixture<RedisLedger> {
    make_sharded_fixture(false, 4).await
}

async fn model_fixture() -> qupid_testkit::Fixture<RedisLedger> {
    make_sharded_fixture(true, 4).await
}

qupid_testkit::conformance_tests!(fixture);
qupid_testkit::model_test!(model_fixture, 64);

fn key(s: &str) -> Key {
    Key::new(s).expect("valid key")
}

#[tokio::test]
async fn a_namespace_keeps_its_shard_count() {
    let (url, ns) = (url(), namespace("shards"));
    let _cleanup = Cleanup::new(&url, &ns);
    let four = RedisLedger::builder(&url, &ns)
        .shards(4)
        .open()
        .await
        .expect("open with 4 shards");
    assert_eq!(four.shards(), 4);
    four.offer(&Policy::default(), &[Offer::new(key("a"))])
        .await
        .expect("offer");
    for other in [1, 2, 8] {
        let err = RedisLedger::builder(&url, &ns)
            .shards(other)
            .open()
            .await
            .expect_err("another count");
        assert_eq!(err.kind(), ErrorKind::Config, "{other}: {err}");
        assert!(err.to_string().contains("split into 4"), "{err}");
    }
    for bad in [0, 1025] {
        let err = RedisLedger::builder(&url, &ns)
            .shards(bad)
            .open()
            .await
            .expect_err("out of range");
        assert_eq!(err.kind(), ErrorKind::Config, "{bad}: {err}");
    }
    // Reopening with the same count sees the same records; so does an open that does not
    // say (the CLI's, a URL's), which reads the namespace's count.
    let again = RedisLedger::builder(&url, &ns)
        .shards(4)
        .open()
        .await
        .expect("reopen");
    assert!(again.get(&key("a")).await.expect("get").is_some());
    let unsaid = qupid::AnyLedger::open(&url, &ns)
        .await
        .expect("open by URL");
    assert!(unsaid.get(&key("a")).await.expect("get").is_some());
    let read_only = RedisLedger::builder(&url, &ns)
        .read_only(true)
        .open()
        .await
        .expect("read-only");
    assert_eq!(read_only.shards(), 4);

    // An unsharded namespace that holds records cannot be split.
    let plain = namespace("shards_plain");
    let _cleanup2 = Cleanup::new(&url, &plain);
    let l = RedisLedger::open(&url, &plain).await.expect("open");
    l.offer(&Policy::default(), &[Offer::new(key("a"))])
        .await
        .expect("offer");
    let err = RedisLedger::builder(&url, &plain)
        .shards(4)
        .open()
        .await
        .expect_err("splitting a namespace with records");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

/// A purge by count keeps exactly the newest records across every shard, ties (records
/// finished at the same time) broken by key, as an unsharded namespace does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_count_cuts_across_shards() {
    for shards in [1, 4, 16] {
        let fx = make_sharded_fixture(true, shards).await;
        let (l, p) = (&fx.ledger, fx.policy());
        // Five batches of 40 keys, each batch finishing at one (pinned) time.
        for batch in 0..5 {
            let offers: Vec<Offer> = (0..40)
                .map(|i| Offer::new(key(&format!("k{batch}_{i:02}"))))
                .collect();
            let claims: Vec<Claim> = l
                .offer_and_start(&p, &offers)
                .await
                .expect("offer")
                .iter()
                .zip(&offers)
                .map(|(o, offer)| match o {
                    Offered::Accepted(lease) => Claim {
                        key: offer.key.clone(),
                        token: lease.token,
                    },
                    other => panic!("{other:?}"),
                })
                .collect();
            l.complete(&claims).await.expect("complete");
            fx.advance(1).await;
        }
        let retention = Retention {
            completed: Keep::newest(95),
            dead: Keep::FOREVER,
        };
        let purged = l.purge(&retention).await.expect("purge");
        assert_eq!(purged.completed, 105, "{shards} shards");
        // Kept: the last two batches and the 15 newest keys (by key) of the third.
        for batch in 0..5 {
            for i in 0..40 {
                let k = key(&format!("k{batch}_{i:02}"));
                let kept = batch >= 3 || (batch == 2 && i >= 25);
                let there = l.get(&k).await.expect("get").is_some();
                assert_eq!(there, kept, "{shards} shards: {k:?}");
            }
        }
    }
}
