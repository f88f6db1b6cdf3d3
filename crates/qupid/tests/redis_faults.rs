//! The Redis ledger when things go wrong: an unreachable server, lost scripts, foreign keys
//! in the namespace, an evicting server, a server that goes away, neighbours in other
//! namespaces, and the server's clock.
//!
//! Needs a Redis server (see `redis_support`) and the `redis-server` binary, which some tests
//! run on a spare port so they can break it without touching the shared server.

#![cfg(feature = "redis")]

mod redis_support;

use std::time::{Duration, Instant};

use qupid::ledger::{Claim, ListQuery, Offered, RedisLedger, Refused, Removed, State};
use qupid::{ErrorKind, Key, Ledger, LedgerAdmin, Offer, Policy};
use redis::aio::MultiplexedConnection;
use redis_support::{connect, namespace, raw, redis_key, url, Cleanup, SpareServer};

fn key(s: &str) -> Key {
    Key::new(s).expect("valid key")
}

fn offers(keys: &[&str]) -> Vec<Offer> {
    keys.iter().map(|k| Offer::new(key(k))).collect()
}

async fn accept(l: &RedisLedger, p: &Policy, k: &str) -> Claim {
    match l.offer(p, &offers(&[k])).await.expect("offer").remove(0) {
        Offered::Accepted(lease) => Claim {
            key: key(k),
            token: lease.token,
        },
        other => panic!("{k:?} should be accepted, was {other:?}"),
    }
}

async fn cmd<T: redis::FromRedisValue>(conn: &mut MultiplexedConnection, args: &[&[u8]]) -> T {
    let mut c = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await.expect("raw redis command")
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_named() {
    // Nothing listens on port 1.
    let started = Instant::now();
    let err = RedisLedger::open("redis://127.0.0.1:1/0", "ns")
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_transient());
    assert!(err.to_string().contains("redis://127.0.0.1:1/0"), "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "keeps the redis error"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails promptly"
    );
    // A password in the URL is never shown.
    let err = RedisLedger::open("redis://user:hunter2@127.0.0.1:1/", "ns")
        .await
        .expect_err("unreachable");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("redis://user:***@127.0.0.1:1/"), "{text}");
}

#[tokio::test]
async fn bad_namespaces_and_urls_are_config_errors() {
    for ns in ["", "a{b", "a}b", "new\nline"] {
        let err = RedisLedger::open(&url(), ns).await.expect_err(ns);
        assert_eq!(err.kind(), ErrorKind::Config, "{ns:?}: {err}");
        assert!(err.to_string().contains("namespace"), "{err}");
    }
    let err = RedisLedger::open("http://example", "ns")
        .await
        .expect_err("not a redis url");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[tokio::test]
async fn flushed_scripts_are_reloaded_transparently() {
    let (url, ns) = (url(), namespace("flush"));
    let l = connect(&url, &ns).await;
    let _cleanup = Cleanup::new(&url, &ns);
    let p = Policy::default();
    let a = accept(&l, &p, "a").await;
    let mut conn = raw(&url).await;
    let _: () = cmd(&mut conn, &[b"SCRIPT", b"FLUSH"]).await;
    // Every script is gone; each call must load its own again.
    l.start(&p, std::slice::from_ref(&a))
        .await
        .expect("start after flush")[0]
        .as_ref()
        .expect("started");
    accept(&l, &p, "b").await;
    let _: () = cmd(&mut conn, &[b"SCRIPT", b"FLUSH"]).await;
    assert_eq!(l.stats().await.expect("stats after flush").total(), 2);
    assert!(l.get(&key("a")).await.expect("get after flush").is_some());
}

/// A string at a record key that is not a record (another program's value) is unreadable for
/// that key alone: the rest of the batch goes on, the string stays as it was, and only a
/// forced remove deletes it.
#[tokio::test]
async fn a_foreign_record_key_is_unreadable_for_its_key_alone() {
    let (url, ns) = (url(), namespace("wrongtype"));
    let l = connect(&url, &ns).await;
    let _cleanup = Cleanup::new(&url, &ns);
    let p = Policy::default();
    let mut conn = raw(&url).await;
    let foreign = redis_key(&ns, "r:k");
    let _: () = cmd(&mut conn, &[b"SET", foreign.as_bytes(), b"not qupid's"]).await;

    let out = l
        .offer(&p, &offers(&["fresh", "k"]))
        .await
        .expect("a foreign key fails its item only");
    assert!(matches!(out[0], Offered::Accepted(_)), "{out:?}");
    match &out[1] {
        Offered::Unreadable(u) => {
            assert_eq!(u.found(), "a string that is not a qupid record", "{u}")
        }
        other => panic!("expected unreadable, found {other:?}"),
    }
    let value: String = cmd(&mut conn, &[b"GET", foreign.as_bytes()]).await;
    assert_eq!(value, "not qupid's", "the foreign key is untouched");
    assert_eq!(l.stats().await.expect("stats").total(), 1);
    let claim = Claim {
        key: key("k"),
        token: qupid::ledger::Token::new(1),
    };
    let done = l.complete(&[claim]).await.expect("complete");
    assert!(
        matches!(&done[0], Err(Refused::Unreadable(u)) if u.found() == "a string that is not a qupid record"),
        "{done:?}"
    );

    for result in [
        l.get(&key("k")).await.map(|_| ()),
        l.remove(&[key("k")], false).await.map(|_| ()),
        l.retry(&[key("k")]).await.map(|_| ()),
    ] {
        let err = result.expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains(&foreign), "names the key: {err}");
        assert!(!err.is_transient());
    }
    let value: String = cmd(&mut conn, &[b"GET", foreign.as_bytes()]).await;
    assert_eq!(value, "not qupid's", "still untouched");
    assert_eq!(
        l.remove(&[key("k")], true).await.expect("forced remove"),
        vec![Removed::Removed]
    );
    let value: Option<String> = cmd(&mut conn, &[b"GET", foreign.as_bytes()]).await;
    assert_eq!(value, None, "a forced remove deletes it");
    assert!(matches!(
        l.offer(&p, &offers(&["k"])).await.expect("offer")[0],
        Offered::Accepted(_)
    ));
}

#[tokio::test]
async fn damaged_namespace_keys_are_corrupt() {
    let (url, ns) = (url(), namespace("damaged"));
    let l = connect(&url, &ns).await;
    let _cleanup = Cleanup::new(&url, &ns);
    let p = Policy::default();
    let mut conn = raw(&url).await;
    accept(&l, &p, "a").await;

    // An index that is not a sorted set.
    let idx = redis_key(&ns, "idx:completed");
    let _: () = cmd(&mut conn, &[b"SET", idx.as_bytes(), b"x"]).await;
    let err = l.offer(&p, &offers(&["b"])).await.expect_err("bad index");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains(&idx), "{err}");
    let err = l.stats().await.expect_err("bad index");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let _: () = cmd(&mut conn, &[b"DEL", idx.as_bytes()]).await;

    // A token counter that is not a number.
    let token = redis_key(&ns, "token");
    let before: String = cmd(&mut conn, &[b"GET", token.as_bytes()]).await;
    let _: () = cmd(&mut conn, &[b"SET", token.as_bytes(), b"many"]).await;
    let err = l.offer(&p, &offers(&["b"])).await.expect_err("bad counter");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains(&token), "{err}");
    let _: () = cmd(&mut conn, &[b"SET", token.as_bytes(), before.as_bytes()]).await;

    // A hash where a record belongs: one key's answer, not the namespace's.
    let rec = redis_key(&ns, "r:h");
    let _: () = cmd(&mut conn, &[b"HSET", rec.as_bytes(), b"foo", b"bar"]).await;
    let out = l.offer(&p, &offers(&["h", "b"])).await.expect("offer");
    match &out[0] {
        Offered::Unreadable(u) => assert_eq!(u.found(), "a hash", "{u}"),
        other => panic!("expected unreadable, found {other:?}"),
    }
    assert!(matches!(out[1], Offered::Accepted(_)), "{out:?}");
    let fields: Vec<String> = cmd(&mut conn, &[b"HKEYS", rec.as_bytes()]).await;
    assert_eq!(fields, vec!["foo"], "left as it was");
    assert_eq!(l.stats().await.expect("stats").queued, 2);
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let url = url();
    let a_ns = namespace("iso");
    // A namespace whose name extends the other's must not see its keys.
    let b_ns = format!("{a_ns}_more");
    let (a, b) = (connect(&url, &a_ns).await, connect(&url, &b_ns).await);
    let _cleanup = (Cleanup::new(&url, &a_ns), Cleanup::new(&url, &b_ns));
    let p = Policy::default();
    // Each namespace draws its own tokens: give b's "k" a different one than a's.
    accept(&b, &p, "other").await;
    let ca = accept(&a, &p, "k").await;
    let cb = accept(&b, &p, "k").await;
    assert_ne!(ca.token, cb.token);
    a.start(&p, std::slice::from_ref(&ca)).await.expect("start")[0]
        .as_ref()
        .expect("started");
    a.complete(std::slice::from_ref(&ca))
        .await
        .expect("complete")[0]
        .as_ref()
        .expect("completed");
    assert_eq!(
        b.complete(&[ca]).await.expect("complete")[0],
        Err(qupid::ledger::Refused::LeaseLost),
        "a's token means nothing in b"
    );
    assert_eq!(a.stats().await.expect("stats").completed, 1);
    let sb = b.stats().await.expect("stats");
    assert_eq!((sb.queued, sb.completed), (2, 0));
    let page = b
        .list(&ListQuery::new(State::Completed))
        .await
        .expect("list");
    assert!(page.records.is_empty());
    // Moving a's clock moves only a's.
    let mut conn = raw(&url).await;
    let offset = redis_key(&a_ns, "clock_offset_ms");
    let _: i64 = cmd(&mut conn, &[b"INCRBY", offset.as_bytes(), b"3600000"]).await;
    let (ta, tb) = (a.now().await.expect("now"), b.now().await.expect("now"));
    assert!(ta.since(tb) >= Duration::from_secs(3599), "{ta} vs {tb}");
    assert_eq!(
        b.offer(&p, &offers(&["k"])).await.expect("offer")[0],
        Offered::Duplicate(State::Queued),
        "b's lease is still valid"
    );
    b.remove(&[key("k")], true).await.expect("remove");
    assert!(a.get(&key("k")).await.expect("get").is_some());
}

#[tokio::test]
async fn leases_run_on_the_server_clock() {
    let (url, ns) = (url(), namespace("clock"));
    let l = connect(&url, &ns).await;
    let _cleanup = Cleanup::new(&url, &ns);
    let mut conn = raw(&url).await;
    // The ledger's clock is the server's TIME.
    let (s, us): (u64, u64) = cmd(&mut conn, &[b"TIME"]).await;
    let server = s * 1000 + us / 1000;
    let now = l.now().await.expect("now").as_millis();
    assert!(now.abs_diff(server) < 1000, "ledger {now}, server {server}");
    // A real, short lease expires by it.
    let mut p = Policy::default();
    p.lease = Duration::from_millis(200);
    let first = accept(&l, &p, "k").await;
    assert_eq!(
        l.offer(&p, &offers(&["k"])).await.expect("offer")[0],
        Offered::Duplicate(State::Queued)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = accept(&l, &p, "k").await;
    assert!(second.token > first.token);
}

#[tokio::test]
async fn an_evicting_server_is_refused() {
    let server = SpareServer::start(&["--maxmemory-policy", "allkeys-lru"]);
    let err = RedisLedger::open(&server.url(), "ns")
        .await
        .expect_err("allkeys-lru may evict records");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("allkeys-lru") && text.contains("noeviction"),
        "{text}"
    );
    let server = SpareServer::start(&["--maxmemory-policy", "volatile-lru"]);
    RedisLedger::open(&server.url(), "ns")
        .await
        .expect("volatile-* evicts only keys with a TTL, and qupid sets none");
}

#[tokio::test]
async fn a_server_that_forbids_config_is_trusted_with_a_warning() {
    let server = SpareServer::start(&["--maxmemory-policy", "allkeys-lru"]);
    let mut conn = raw(&server.url()).await;
    let _: () = cmd(
        &mut conn,
        &[
            b"ACL", b"SETUSER", b"app", b"on", b">secret", b"~*", b"&*", b"+@all", b"-config",
        ],
    )
    .await;
    let url = format!("redis://app:secret@127.0.0.1:{}/", server.port());
    let l = RedisLedger::open(&url, "ns")
        .await
        .expect("cannot check the policy: warns and starts");
    accept(&l, &Policy::default(), "k").await;
}

#[tokio::test]
async fn a_server_going_away_is_transient_and_comes_back() {
    let mut server = SpareServer::start(&[]);
    let port = server.port();
    let l = connect(&server.url(), "ns").await;
    let p = Policy::default();
    accept(&l, &p, "k").await;
    server.kill();
    let err = l.stats().await.expect_err("the server is gone");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_transient());
    let _server = SpareServer::start_on(port, &[]);
    // The connection re-establishes itself; the first calls may still see the old one fail.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match l.stats().await {
            Ok(stats) => {
                assert_eq!(stats.total(), 0, "a fresh server without persistence");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the ledger did not reconnect: {e}"),
        }
    }
}

/// The scenario of a foreign key in a run: 40 records, one of whose record keys holds a
/// list. The other 39 are processed at once, the foreign one is counted (at every poll) and
/// left untouched, and the pipeline drains and stops by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_processes_the_rest_of_a_batch_around_a_foreign_key() {
    use qupid::{Entry, Pipeline, Source};
    let (url, ns) = (url(), namespace("foreignrun"));
    let l = connect(&url, &ns).await;
    let _cleanup = Cleanup::new(&url, &ns);
    let mut conn = raw(&url).await;
    let foreign = redis_key(&ns, "r:customer/00030");
    let _: () = cmd(&mut conn, &[b"RPUSH", foreign.as_bytes(), b"x"]).await;
    let source = Source::poll(Duration::from_millis(20), || async {
        Ok::<_, std::io::Error>((0..40).map(|i| Entry::new(format!("customer/{i:05}"), i)))
    });
    let run = Pipeline::builder(l.clone())
        .source(source)
        .process(|_| async { Ok::<_, std::io::Error>(()) })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .stop_when_drained()
        .build()
        .expect("a pipeline")
        .run();
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("it stops by itself")
        .expect("a foreign key does not end the run");
    assert_eq!(report.completed, 39, "{report}");
    assert!(report.unreadable >= 1, "{report}");
    assert_eq!(report.ledger_errors, 0, "{report}");
    let kind: String = cmd(&mut conn, &[b"TYPE", foreign.as_bytes()]).await;
    assert_eq!(kind, "list", "the foreign key is left untouched");
    assert_eq!(l.stats().await.expect("stats").completed, 39);
}
