//! Redis layout versions: a new namespace gets its layout marker with its first token; one
//! of an unknown layout, or with tokens but no marker, is refused.
//!
//! Needs a Redis server (see `redis_support`).

#![cfg(feature = "redis")]

mod redis_support;

use qupid::ledger::State;
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
    assert_eq!(get("layout").await.as_deref(), Some("1"));
    assert_eq!(get("token").await.as_deref(), Some("1"));
}

#[tokio::test]
async fn an_unknown_layout_or_a_missing_marker_is_refused() {
    let (url, ns) = (url(), namespace("layoutbad"));
    let _cleanup = Cleanup::new(&url, &ns);
    let mut conn = raw(&url).await;
    let l = connect(&url, &ns).await;
    let p = Policy::default();
    l.offer(&p, &[Offer::new(key("a"))]).await.expect("offer");

    // Written by a newer qupid: neither this connection nor a new one touches it.
    let marker = redis_key(&ns, "layout");
    run(&mut conn, &["SET", &marker, "2"]).await;
    let err = l
        .offer(&p, &[Offer::new(key("b"))])
        .await
        .expect_err("layout 2");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("layout 2"), "{err}");
    let err = qupid::ledger::RedisLedger::open(&url, &ns)
        .await
        .expect_err("layout 2");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");

    // Tokens but no marker: every build writes the marker with the first token, so the
    // namespace is damaged (or holds another program's keys). Refused, changing nothing.
    run(&mut conn, &["DEL", &marker]).await;
    let err = l
        .offer(&p, &[Offer::new(key("b"))])
        .await
        .expect_err("no marker");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("no layout marker"), "{err}");
    assert_eq!(
        l.stats().await.expect_err("stats").kind(),
        ErrorKind::Corrupt
    );
    let err = qupid::ledger::RedisLedger::open(&url, &ns)
        .await
        .expect_err("no marker");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    // Put back, the namespace is as it was.
    run(&mut conn, &["SET", &marker, "1"]).await;
    let again = connect(&url, &ns).await;
    assert_eq!(again.stats().await.expect("stats").total(), 1);
    assert_eq!(
        l.get(&key("a")).await.expect("get").map(|r| r.state),
        Some(State::Queued)
    );
}
