//! A Redis ledger opened read-only: a namespace with no keys is "no qupid ledger here" and
//! stays without keys, and every write is refused.
//!
//! Needs a Redis server (see `redis_support`).

#![cfg(feature = "redis")]

mod redis_support;

use qupid::ledger::{Claim, RedisLedger, State};
use qupid::{AnyLedger, ErrorKind, Key, Ledger, LedgerAdmin, Offer, Policy, Retention};
use redis_support::{connect, namespace, raw, redis_key, url, Cleanup};

fn key(s: &str) -> Key {
    Key::new(s).expect("valid key")
}

async fn read_only(url: &str, ns: &str) -> qupid::Result<RedisLedger> {
    RedisLedger::builder(url, ns).read_only(true).open().await
}

/// How many keys the namespace holds.
async fn keys(url: &str, ns: &str) -> usize {
    let mut conn = raw(url).await;
    let found: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(format!("{}*", redis_key(ns, "")))
        .query_async(&mut conn)
        .await
        .expect("keys");
    found.len()
}

#[tokio::test]
async fn a_namespace_with_no_keys_is_not_found_and_stays_empty() {
    let (url, ns) = (url(), namespace("ro_none"));
    let _cleanup = Cleanup::new(&url, &ns);
    let err = read_only(&url, &ns).await.expect_err("no keys");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("no qupid ledger here"), "{msg}");
    assert!(msg.contains(&ns), "names the namespace: {msg}");
    let err = AnyLedger::open_read_only(&url, &ns)
        .await
        .expect_err("no keys");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(keys(&url, &ns).await, 0, "no key was created");

    // Once something was offered there, it reads.
    let writer = connect(&url, &ns).await;
    writer
        .offer(&Policy::default(), &[Offer::new(key("a"))])
        .await
        .expect("offer");
    let l = read_only(&url, &ns).await.expect("a ledger now");
    assert_eq!(l.stats().await.expect("stats").queued, 1);
}

#[tokio::test]
async fn every_write_is_refused_and_reads_see_the_writer() {
    let (url, ns) = (url(), namespace("ro_writes"));
    let _cleanup = Cleanup::new(&url, &ns);
    let writer = connect(&url, &ns).await;
    let p = Policy::default();
    let offered = writer
        .offer(&p, &[Offer::new(key("a"))])
        .await
        .expect("offer");
    let claim = Claim {
        key: key("a"),
        token: offered[0].lease().expect("accepted").token,
    };
    let l = read_only(&url, &ns).await.expect("read-only");
    assert!(l.is_read_only() && !writer.is_read_only());
    let before = keys(&url, &ns).await;
    let errors = [
        l.offer(&p, &[Offer::new(key("b"))]).await.map(drop),
        l.offer_and_start(&p, &[Offer::new(key("b"))])
            .await
            .map(drop),
        l.start(&p, std::slice::from_ref(&claim)).await.map(drop),
        l.renew(&p, std::slice::from_ref(&claim)).await.map(drop),
        l.complete(&[]).await.map(drop),
        l.release(std::slice::from_ref(&claim)).await.map(drop),
        l.remove(&[key("a")], true).await.map(drop),
        l.retry(&[key("a")]).await.map(drop),
        l.purge(&Retention::default()).await.map(drop),
    ];
    for (i, r) in errors.into_iter().enumerate() {
        let err = r.expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "call {i}: {err}");
    }
    assert_eq!(keys(&url, &ns).await, before);
    let a = l.get(&key("a")).await.expect("get").expect("a record");
    assert_eq!(a.state, State::Queued);
    writer
        .start(&p, std::slice::from_ref(&claim))
        .await
        .expect("the writer goes on");
    assert_eq!(l.stats().await.expect("stats").running, 1);
}
