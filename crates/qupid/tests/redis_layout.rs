//! Redis layout versions: a namespace written by an older qupid (layout 1, one hash per
//! record) is migrated by `RedisLedger::connect`; one of an unknown layout is refused.
//!
//! Needs a Redis server (see `redis_support`).

#![cfg(feature = "redis")]

mod redis_support;

use qupid::ledger::{Claim, Done, ListQuery, Offered, State, Token};
use qupid::{ErrorKind, Key, Ledger, LedgerAdmin, Offer, Policy};
use redis::aio::MultiplexedConnection;
use redis_support::{connect, namespace, raw, redis_key, url, Cleanup};

fn key(s: &str) -> Key {
    Key::new(s).expect("valid key")
}

async fn run(conn: &mut MultiplexedConnection, args: &[&str]) {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.exec_async(conn).await.expect("raw redis command");
}

/// Writes `n` records the way layout 1 did: a hash per record (fields s, t, x, a, b and the
/// optional v, n, e, p), the key in its state's index (and a finished one in the finish-time
/// index), the token counter, and no layout marker. Record `i` is Completed (with a version)
/// for even `i`, Running (token `i + 1`) for odd `i`, and `special` is Dead with a last error
/// and a superseded flag.
async fn write_layout_1(conn: &mut MultiplexedConnection, ns: &str, n: usize) {
    let rk = |k: &str| redis_key(ns, &format!("r:{k}"));
    for i in 0..n {
        let k = format!("old/{i:05}");
        let token = (i + 1).to_string();
        if i % 2 == 0 {
            run(
                conn,
                &[
                    "HSET",
                    &rk(&k),
                    "s",
                    "c",
                    "t",
                    &token,
                    "x",
                    "1000",
                    "a",
                    "1",
                    "b",
                    "0",
                    "v",
                    "v1",
                ],
            )
            .await;
            run(conn, &["ZADD", &redis_key(ns, "idx:completed"), "0", &k]).await;
            run(conn, &["ZADD", &redis_key(ns, "fin:completed"), "1000", &k]).await;
        } else {
            let far = (u64::MAX >> 14).to_string(); // a lease that has not expired
            run(
                conn,
                &[
                    "HSET",
                    &rk(&k),
                    "s",
                    "r",
                    "t",
                    &token,
                    "x",
                    &far,
                    "a",
                    "1",
                    "b",
                    "0",
                ],
            )
            .await;
            run(conn, &["ZADD", &redis_key(ns, "idx:running"), "0", &k]).await;
        }
    }
    let special = "special key: spaces | pipes\nand a newline";
    run(
        conn,
        &[
            "HSET",
            &rk(special),
            "s",
            "d",
            "t",
            &(n + 1).to_string(),
            "x",
            "2000",
            "a",
            "3",
            "b",
            "2",
            "e",
            "boom | with -1 and | pipes",
            "p",
            "1",
            "n",
            "v9",
        ],
    )
    .await;
    run(conn, &["ZADD", &redis_key(ns, "idx:dead"), "0", special]).await;
    run(conn, &["ZADD", &redis_key(ns, "fin:dead"), "2000", special]).await;
    run(
        conn,
        &["SET", &redis_key(ns, "token"), &(n + 1).to_string()],
    )
    .await;
}

#[tokio::test]
async fn connect_migrates_a_layout_1_namespace() {
    let (url, ns) = (url(), namespace("layout1"));
    let _cleanup = Cleanup::new(&url, &ns);
    let mut conn = raw(&url).await;
    // More than one migration chunk (2,000 records).
    let n = 4_500;
    write_layout_1(&mut conn, &ns, n).await;

    let l = connect(&url, &ns).await;
    let marker: Option<String> = redis::cmd("GET")
        .arg(redis_key(&ns, "layout"))
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(marker.as_deref(), Some("2"), "the marker is written");
    let kind: String = redis::cmd("TYPE")
        .arg(redis_key(&ns, "r:old/00000"))
        .query_async(&mut conn)
        .await
        .expect("type");
    assert_eq!(kind, "string", "records are strings now");

    let stats = l.stats().await.expect("stats");
    assert_eq!(
        (stats.running, stats.completed, stats.dead),
        (n as u64 / 2, n as u64 / 2, 1)
    );
    let done = l
        .get(&key("old/00002"))
        .await
        .expect("get")
        .expect("record");
    assert_eq!(done.state, State::Completed);
    assert_eq!(done.token, Token::new(3));
    assert_eq!(done.version.as_ref().map(|v| v.as_str()), Some("v1"));
    assert_eq!(done.finished_at.map(|t| t.as_millis()), Some(1000));
    let special = "special key: spaces | pipes\nand a newline";
    let dead = l.get(&key(special)).await.expect("get").expect("record");
    assert_eq!(dead.state, State::Dead);
    assert_eq!(
        (dead.attempts, dead.abandoned, dead.superseded),
        (3, 2, true)
    );
    assert_eq!(
        dead.last_error.as_deref(),
        Some("boom | with -1 and | pipes")
    );
    assert_eq!(dead.newer_version.as_ref().map(|v| v.as_str()), Some("v9"));
    let page = l
        .list(&ListQuery::new(State::Running).limit(3))
        .await
        .expect("list");
    let keys: Vec<&str> = page.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["old/00001", "old/00003", "old/00005"]);

    // The migrated records go on working: a holder completes under its old token, a
    // completed key is a duplicate, and new tokens continue the old counter.
    let claim = Claim {
        key: key("old/00001"),
        token: Token::new(2),
    };
    assert_eq!(
        l.complete(&[claim]).await.expect("complete"),
        vec![Ok(Done { superseded: false })]
    );
    let p = Policy::default();
    let out = l
        .offer(&p, &[Offer::new(key("old/00000")), Offer::new(key("new"))])
        .await
        .expect("offer");
    assert_eq!(out[0], Offered::Duplicate(State::Completed));
    let lease = out[1].lease().expect("a new key is accepted");
    assert_eq!(lease.token, Token::new(n as u64 + 2));

    // Connecting again finds the current layout and changes nothing.
    let again = connect(&url, &ns).await;
    assert_eq!(
        again.stats().await.expect("stats"),
        l.stats().await.expect("stats")
    );
}

#[tokio::test]
async fn a_new_namespace_gets_its_marker_with_its_first_token() {
    let (url, ns) = (url(), namespace("layoutnew"));
    let _cleanup = Cleanup::new(&url, &ns);
    let conn = raw(&url).await;
    let l = connect(&url, &ns).await;
    let get = |name: &'static str| {
        let k = redis_key(&ns, name);
        let mut conn = conn.clone();
        async move {
            let v: Option<String> = redis::cmd("GET")
                .arg(k)
                .query_async(&mut conn)
                .await
                .expect("get");
            v
        }
    };
    assert_eq!(get("layout").await, None, "connect writes nothing");
    l.offer(&Policy::default(), &[Offer::new(key("a"))])
        .await
        .expect("offer");
    assert_eq!(get("layout").await.as_deref(), Some("2"));
    assert_eq!(get("token").await.as_deref(), Some("1"));
}

#[tokio::test]
async fn an_unknown_layout_or_an_unmigrated_namespace_is_refused() {
    let (url, ns) = (url(), namespace("layoutbad"));
    let _cleanup = Cleanup::new(&url, &ns);
    let mut conn = raw(&url).await;
    let l = connect(&url, &ns).await;
    let p = Policy::default();
    l.offer(&p, &[Offer::new(key("a"))]).await.expect("offer");

    // Written by a newer qupid: neither this connection nor a new one touches it.
    let marker = redis_key(&ns, "layout");
    run(&mut conn, &["SET", &marker, "3"]).await;
    let err = l
        .offer(&p, &[Offer::new(key("b"))])
        .await
        .expect_err("layout 3");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("layout 3"), "{err}");
    let err = qupid::ledger::RedisLedger::connect(&url, &ns)
        .await
        .expect_err("layout 3");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");

    // Tokens but no marker: records of layout 1 that connect has not migrated (say, written
    // by an older instance still running). Scripts refuse them until a connect migrates.
    run(&mut conn, &["DEL", &marker]).await;
    let err = l
        .offer(&p, &[Offer::new(key("b"))])
        .await
        .expect_err("not migrated");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("older qupid"), "{err}");
    assert_eq!(
        l.stats().await.expect_err("stats").kind(),
        ErrorKind::Corrupt
    );
    let again = connect(&url, &ns).await;
    assert_eq!(again.stats().await.expect("stats").total(), 1);
    assert_eq!(
        l.get(&key("a")).await.expect("get").map(|r| r.state),
        Some(State::Queued)
    );
}

/// `connect`'s cancel safety: "a migration stopped that way has converted whole chunks of
/// records; the next `connect` goes on with it". Connects to a layout-1 namespace are dropped
/// after growing delays, some mid-migration; the connect that finishes leaves every record
/// migrated and whole.
#[tokio::test]
async fn a_dropped_connect_leaves_a_migration_to_go_on_with() {
    let (url, ns) = (url(), namespace("layoutdrop"));
    let _cleanup = Cleanup::new(&url, &ns);
    let mut conn = raw(&url).await;
    let n = 4_500;
    write_layout_1(&mut conn, &ns, n).await;
    let mut dropped = 0;
    for micros in [0u64, 200, 1_000, 2_000, 4_000, 8_000, 16_000] {
        let wait = std::time::Duration::from_micros(micros);
        match tokio::time::timeout(wait, qupid::ledger::RedisLedger::connect(&url, &ns)).await {
            Err(_) => dropped += 1,
            Ok(r) => {
                r.expect("a connect that finishes succeeds");
                break;
            }
        }
    }
    assert!(dropped > 0, "at least one connect was dropped mid-way");
    let l = connect(&url, &ns).await;
    let stats = l.stats().await.expect("stats");
    assert_eq!(
        (stats.running, stats.completed, stats.dead),
        (n as u64 / 2, n as u64 / 2, 1)
    );
    for i in [0, 1, 2_001, 4_499] {
        let r = l
            .get(&key(&format!("old/{i:05}")))
            .await
            .expect("get")
            .expect("record");
        assert_eq!(r.token, Token::new(i as u64 + 1), "{r:?}");
    }
}

/// Every key of the namespace with its type and value (hashes as sorted field lists), to
/// compare before and after.
async fn dump(conn: &mut MultiplexedConnection, ns: &str) -> Vec<(String, String)> {
    let pattern = format!("{}*", redis_key(ns, ""));
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(conn)
        .await
        .expect("keys");
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(conn)
            .await
            .expect("type");
        let value = match kind.as_str() {
            "hash" => {
                let mut f: Vec<(String, String)> = redis::cmd("HGETALL")
                    .arg(&k)
                    .query_async(conn)
                    .await
                    .expect("hgetall");
                f.sort();
                format!("{f:?}")
            }
            "zset" => {
                let m: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(conn)
                    .await
                    .expect("zrange");
                format!("{m:?}")
            }
            _ => {
                let v: Option<String> = redis::cmd("GET")
                    .arg(&k)
                    .query_async(conn)
                    .await
                    .expect("get");
                format!("{v:?}")
            }
        };
        out.push((k, format!("{kind}: {value}")));
    }
    out
}

/// A read-only open of a layout-1 namespace migrates nothing: it says the namespace needs a
/// read-write open to be migrated, and every key stays as it was. A read-write open then
/// migrates it, as before.
#[tokio::test]
async fn a_read_only_open_does_not_migrate_layout_1() {
    let (url, ns) = (url(), namespace("layout1ro"));
    let _cleanup = Cleanup::new(&url, &ns);
    let mut conn = raw(&url).await;
    write_layout_1(&mut conn, &ns, 10).await;
    let before = dump(&mut conn, &ns).await;
    let says_migrate = |err: qupid::Error| {
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("layout 1") && msg.contains("migrate"), "{msg}");
    };
    says_migrate(
        qupid::ledger::RedisLedger::builder(&url, &ns)
            .read_only(true)
            .connect()
            .await
            .expect_err("layout 1 is not read read-only"),
    );
    says_migrate(
        qupid::AnyLedger::open_read_only(&url, &ns)
            .await
            .expect_err("layout 1 is not read read-only"),
    );
    assert_eq!(
        dump(&mut conn, &ns).await,
        before,
        "not migrated, not touched"
    );

    let l = connect(&url, &ns).await;
    assert_eq!(l.stats().await.expect("stats").total(), 11);
    let marker: Option<String> = redis::cmd("GET")
        .arg(redis_key(&ns, "layout"))
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(marker.as_deref(), Some("2"), "a read-write open migrates");
    let ro = qupid::ledger::RedisLedger::builder(&url, &ns)
        .read_only(true)
        .connect()
        .await
        .expect("a migrated namespace reads");
    assert_eq!(ro.stats().await.expect("stats").total(), 11);
}
