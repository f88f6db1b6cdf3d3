//! A PostgreSQL ledger opened read-only: a namespace without a schema is "no qupid ledger
//! here" and stays without one, an older schema is read without an upgrade, and every write
//! is refused.
//!
//! Needs a PostgreSQL server (see `postgres_support`).

#![cfg(feature = "postgres")]

mod postgres_support;

use postgres_support::{connect, namespace, raw, schema, url, Cleanup};
use qupid::ledger::{Claim, PostgresLedger, State};
use qupid::{ErrorKind, Key, Ledger, LedgerAdmin, Offer, Policy, Retention};
use tokio_postgres::Client;

fn key(s: &str) -> Key {
    Key::new(s).expect("valid key")
}

async fn read_only(url: &str, ns: &str) -> qupid::Result<PostgresLedger> {
    PostgresLedger::builder(url, ns)
        .read_only(true)
        .open()
        .await
}

async fn schema_exists(client: &Client, ns: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&format!("qupid_{ns}")],
        )
        .await
        .expect("query")
        .get::<_, i64>(0)
        == 1
}

#[tokio::test]
async fn a_namespace_without_a_schema_is_not_found_and_none_is_made() {
    let (url, ns) = (url(), namespace("ro_none"));
    let _cleanup = Cleanup::new(&url, &ns);
    let client = raw(&url).await;
    let err = read_only(&url, &ns).await.expect_err("no schema");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("no qupid ledger here"), "{msg}");
    assert!(
        msg.contains(&ns) && msg.contains(&url),
        "names the namespace and server: {msg}"
    );
    assert!(!schema_exists(&client, &ns).await, "no schema was created");

    // An empty schema an administrator made for qupid to fill holds no ledger either.
    client
        .batch_execute(&format!("CREATE SCHEMA {}", schema(&ns)))
        .await
        .expect("an empty schema");
    let err = read_only(&url, &ns).await.expect_err("an empty schema");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let objects: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1",
            &[&format!("qupid_{ns}")],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(objects, 0, "still empty");

    // A read-write connect makes the ledger, as before.
    drop(connect(&url, &ns).await);
    read_only(&url, &ns).await.expect("now there is one");
}

#[tokio::test]
async fn a_ledger_reads_and_every_write_is_refused() {
    let (url, ns) = (url(), namespace("ro_writes"));
    let _cleanup = Cleanup::new(&url, &ns);
    let writer = connect(&url, &ns).await;
    let p = Policy::default();
    let offered = writer
        .offer(&p, &[Offer::new(key("a")), Offer::new(key("b"))])
        .await
        .expect("offer");
    let l = read_only(&url, &ns).await.expect("opens read-only");
    assert!(l.is_read_only() && !writer.is_read_only());
    assert_eq!(l.stats().await.expect("stats").queued, 2);
    let claim = Claim {
        key: key("a"),
        token: offered[0].lease().expect("accepted").token,
    };
    let errors = [
        l.offer(&p, &[Offer::new(key("c"))]).await.map(drop),
        l.offer_and_start(&p, &[]).await.map(drop),
        l.start(&p, std::slice::from_ref(&claim)).await.map(drop),
        l.renew(&p, std::slice::from_ref(&claim)).await.map(drop),
        l.complete(std::slice::from_ref(&claim)).await.map(drop),
        l.release(std::slice::from_ref(&claim)).await.map(drop),
        l.remove(&[key("a")], true).await.map(drop),
        l.retry(&[key("a")]).await.map(drop),
        l.purge(&Retention::default()).await.map(drop),
    ];
    for (i, r) in errors.into_iter().enumerate() {
        let err = r.expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "call {i}: {err}");
        assert!(err.to_string().contains(&ns), "call {i}: {err}");
    }
    // Nothing changed, and the writer goes on; the reader sees its commits.
    writer
        .offer(&p, &[Offer::new(key("c"))])
        .await
        .expect("the writer offers");
    assert_eq!(l.stats().await.expect("stats").queued, 3);
    let a = l.get(&key("a")).await.expect("get").expect("a record");
    assert_eq!((a.state, a.token), (State::Queued, claim.token));
}

#[tokio::test]
async fn a_newer_or_foreign_schema_is_corrupt() {
    let (url, ns) = (url(), namespace("ro_newer"));
    let _cleanup = Cleanup::new(&url, &ns);
    drop(connect(&url, &ns).await);
    let client = raw(&url).await;
    client
        .batch_execute(&format!(
            "UPDATE {}.meta SET schema_version = 99",
            schema(&ns)
        ))
        .await
        .expect("fake a newer schema");
    let err = read_only(&url, &ns).await.expect_err("newer");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("newer qupid"), "{err}");

    let (url, ns) = (url, namespace("ro_foreign"));
    let _cleanup = Cleanup::new(&url, &ns);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {s}; CREATE TABLE {s}.invoices (id int)",
            s = schema(&ns)
        ))
        .await
        .expect("another program's schema");
    let err = read_only(&url, &ns).await.expect_err("foreign");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}
