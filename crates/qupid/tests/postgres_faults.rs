//! What the PostgreSQL ledger does when things go wrong: no server, bad settings, a schema
//! it did not write (or a newer qupid wrote), broken connections; and that namespaces do
//! not see each other.
//!
//! Needs a PostgreSQL server (see `postgres_support`). Nothing here restarts the shared
//! server: a broken connection is made by terminating this test's own backends.

#![cfg(feature = "postgres")]

mod postgres_support;

use std::time::Duration;

use postgres_support::{connect, namespace, raw, schema, url, Cleanup};
use qupid::ledger::{Offered, PostgresLedger, State};
use qupid::{ErrorKind, Key, Ledger, LedgerAdmin, Offer, Policy};

fn offers(keys: &[&str]) -> Vec<Offer> {
    keys.iter()
        .map(|k| Offer::new(Key::new(k).expect("valid key")))
        .collect()
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_named() {
    // Port 1 on the loopback: nothing listens there, so the connection is refused at once.
    let url = "postgres://qupid:s3cret@127.0.0.1:1/test";
    let err = PostgresLedger::builder(url, "orders")
        .connect_timeout(Duration::from_secs(2))
        .open()
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_transient());
    let message = err.to_string();
    assert!(
        message.contains("postgres://qupid:***@127.0.0.1:1/test"),
        "names the url: {message}"
    );
    assert!(!message.contains("s3cret"), "hides the password: {message}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "keeps the driver error"
    );
}

#[tokio::test]
async fn bad_settings_are_config_errors() {
    for ns in ["", "Orders", "a-b", "a b", "x;drop", &"n".repeat(49)] {
        // Checked before connecting: an unreachable URL does not matter.
        let err = PostgresLedger::open("postgres://127.0.0.1:1/test", ns)
            .await
            .expect_err(ns);
        assert_eq!(err.kind(), ErrorKind::Config, "{ns:?}: {err}");
        assert!(err.to_string().contains("a-z, 0-9 and _"), "{err}");
    }
    let err = PostgresLedger::open("postgres://127.0.0.1:notaport/test", "orders")
        .await
        .expect_err("a bad url");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    // A database that does not exist will not appear by retrying.
    let mut missing = url();
    let slash = missing.rfind('/').expect("a url with a database");
    missing.replace_range(slash.., "/qupid_no_such_database");
    let err = PostgresLedger::open(&missing, "orders")
        .await
        .expect_err("no such database");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_newer_schema_version_is_refused_untouched() {
    let url = url();
    let ns = namespace("newer");
    let _cleanup = Cleanup::new(&url, &ns);
    let ledger = connect(&url, &ns).await;
    let out = ledger
        .offer(&Policy::default(), &offers(&["kept"]))
        .await
        .expect("offer");
    assert!(matches!(out[0], Offered::Accepted(_)));
    drop(ledger);
    let client = raw(&url).await;
    let s = schema(&ns);
    client
        .batch_execute(&format!("UPDATE {s}.meta SET schema_version = 999"))
        .await
        .expect("pretend a newer qupid wrote the schema");
    let err = PostgresLedger::open(&url, &ns)
        .await
        .expect_err("a newer schema");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("999") && message.contains("newer qupid"),
        "{message}"
    );
    let version: i32 = client
        .query_one(&format!("SELECT schema_version FROM {s}.meta"), &[])
        .await
        .expect("meta")
        .get(0);
    assert_eq!(version, 999, "nothing was changed");
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {s}.records"), &[])
        .await
        .expect("records")
        .get(0);
    assert_eq!(rows, 1, "no data was dropped");
}

#[tokio::test]
async fn a_foreign_schema_is_refused_and_an_empty_one_is_used() {
    let url = url();
    let client = raw(&url).await;
    let foreign = namespace("foreign");
    let _c1 = Cleanup::new(&url, &foreign);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {s}; CREATE TABLE {s}.theirs (x int)",
            s = schema(&foreign)
        ))
        .await
        .expect("a schema of someone else's");
    let err = PostgresLedger::open(&url, &foreign)
        .await
        .expect_err("a foreign schema");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("not made by qupid"), "{err}");

    // An administrator may create the empty schema (and grant it) for qupid to fill.
    let empty = namespace("empty");
    let _c2 = Cleanup::new(&url, &empty);
    client
        .batch_execute(&format!("CREATE SCHEMA {}", schema(&empty)))
        .await
        .expect("an empty schema");
    let ledger = connect(&url, &empty).await;
    assert_eq!(ledger.stats().await.expect("stats").total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_processes_connecting_at_once_migrate_once() {
    let url = url();
    let ns = namespace("race");
    let _cleanup = Cleanup::new(&url, &ns);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (url, ns) = (url.clone(), ns.clone());
        tasks.push(tokio::spawn(async move {
            PostgresLedger::builder(&url, &ns).pool_size(1).open().await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("every connect succeeds");
    }
    let ledger = connect(&url, &ns).await;
    let out = ledger
        .offer(&Policy::default(), &offers(&["a"]))
        .await
        .expect("offer");
    assert!(matches!(out[0], Offered::Accepted(_)));
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let url = url();
    let (a, b) = (namespace("iso_a"), namespace("iso_b"));
    let (_ca, _cb) = (Cleanup::new(&url, &a), Cleanup::new(&url, &b));
    let (la, lb) = (connect(&url, &a).await, connect(&url, &b).await);
    let p = Policy::default();
    let first = la.offer(&p, &offers(&["k"])).await.expect("offer");
    let other = lb.offer(&p, &offers(&["k"])).await.expect("offer");
    assert!(matches!(first[0], Offered::Accepted(_)));
    assert!(
        matches!(other[0], Offered::Accepted(_)),
        "another namespace has its own keys"
    );
    assert_eq!(
        la.offer(&p, &offers(&["k"])).await.expect("offer")[0],
        Offered::Duplicate(State::Queued)
    );
    // Moving one namespace's clock past the lease moves only that one.
    let client = raw(&url).await;
    client
        .batch_execute(&format!(
            "UPDATE {}.meta SET clock_offset_ms = clock_offset_ms + 3600000",
            schema(&a)
        ))
        .await
        .expect("move a's clock");
    assert!(matches!(
        la.offer(&p, &offers(&["k"])).await.expect("offer")[0],
        Offered::Accepted(_)
    ));
    assert_eq!(
        lb.offer(&p, &offers(&["k"])).await.expect("offer")[0],
        Offered::Duplicate(State::Queued)
    );
    let (na, nb) = (la.now().await.expect("now"), lb.now().await.expect("now"));
    assert!(na.since(nb) >= Duration::from_secs(3599), "{na} vs {nb}");
    assert_eq!(la.stats().await.expect("stats").total(), 1);
    assert_eq!(lb.stats().await.expect("stats").total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_connections_are_transient_and_replaced() {
    let url = url();
    let ns = namespace("broken");
    let _cleanup = Cleanup::new(&url, &ns);
    let ledger = PostgresLedger::builder(&url, &ns)
        .pool_size(2)
        .open()
        .await
        .expect("connect");
    let p = Policy::default();
    let out = ledger.offer(&p, &offers(&["a", "b"])).await.expect("offer");
    assert!(out.iter().all(|o| matches!(o, Offered::Accepted(_))));
    // What a server restart does to the pool: every connection of this ledger is cut.
    let client = raw(&url).await;
    let cut: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&format!("qupid:{ns}")],
        )
        .await
        .expect("terminate the ledger's backends")
        .get(0);
    assert!(cut >= 1, "the ledger had a connection open");
    // The next call may meet a connection that has not noticed yet: it fails as transient…
    match ledger.stats().await {
        Ok(stats) => assert_eq!(stats.queued, 2),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert!(e.is_transient());
            assert!(
                e.to_string().contains("127.0.0.1") || e.to_string().contains(&url),
                "{e}"
            );
        }
    }
    // …and a broken connection is never handed out twice: the pool replaces it.
    let mut ok = 0;
    for _ in 0..4 {
        if ledger.stats().await.is_ok() {
            ok += 1;
        }
    }
    assert!(
        ok >= 3,
        "calls succeed again once the broken connections are gone"
    );
    let stats = ledger.stats().await.expect("stats after reconnecting");
    assert_eq!(stats.queued, 2, "nothing was lost");
    let again = ledger.offer(&p, &offers(&["a", "c"])).await.expect("offer");
    assert_eq!(again[0], Offered::Duplicate(State::Queued));
    assert!(matches!(again[1], Offered::Accepted(_)));
}

#[tokio::test]
async fn a_damaged_namespace_is_corrupt() {
    let url = url();
    let ns = namespace("damaged");
    let _cleanup = Cleanup::new(&url, &ns);
    let ledger = connect(&url, &ns).await;
    let client = raw(&url).await;
    client
        .batch_execute(&format!("DROP TABLE {}.records", schema(&ns)))
        .await
        .expect("drop the records table");
    let err = ledger
        .get(&Key::new("k").expect("valid"))
        .await
        .expect_err("no records table");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(&ns), "names the namespace: {err}");
    client
        .batch_execute(&format!("DELETE FROM {}.meta", schema(&ns)))
        .await
        .expect("empty the meta table");
    let err = ledger.now().await.expect_err("no meta row");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}

/// `connect`'s cancel safety: "dropping the future closes the connections; a schema
/// migration is one transaction: applied whole or not at all". Connects to a fresh namespace
/// are dropped after growing delays, some while the schema is being created; the connect
/// that finishes finds a whole schema and a working ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connect_leaves_no_half_made_schema() {
    let (url, ns) = (url(), namespace("dropconnect"));
    let _cleanup = Cleanup::new(&url, &ns);
    let mut dropped = 0;
    for micros in [0u64, 500, 2_000, 5_000, 10_000, 20_000, 40_000, 80_000] {
        let wait = Duration::from_micros(micros);
        match tokio::time::timeout(wait, PostgresLedger::open(&url, &ns)).await {
            Err(_) => dropped += 1,
            Ok(r) => {
                r.expect("a connect that finishes succeeds");
                break;
            }
        }
    }
    assert!(dropped > 0, "at least one connect was dropped mid-way");
    let l = connect(&url, &ns).await;
    let out = l
        .offer(&Policy::default(), &offers(&["a", "b"]))
        .await
        .expect("offer");
    assert!(
        out.iter().all(|o| matches!(o, Offered::Accepted(_))),
        "{out:?}"
    );
    assert_eq!(l.stats().await.expect("stats").queued, 2);
}
