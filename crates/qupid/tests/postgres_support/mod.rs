//! Shared by the PostgreSQL tests: the server, fresh namespaces, clocks that move, and
//! cleanup.
//!
//! The tests use `QUPID_POSTGRES_URL`, or `postgres://postgres@127.0.0.1:5432/test` by
//! default. A server that cannot be reached fails the tests (it never skips them) with a
//! message saying how to start one.

#![allow(dead_code)] // each test file uses its own part

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use qupid::ledger::PostgresLedger;
use qupid::Key;
use qupid_testkit::{Fixture, Plant, TestClock};
use tokio_postgres::{Client, NoTls};

/// What to do when no server answers.
pub(crate) const HOW_TO_START: &str = "the postgres tests need a PostgreSQL 12+ server with \
     a database `test` that user `postgres` can reach without a password: start one with \
     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
     (apt-get install postgresql; allow `trust` for 127.0.0.1 in pg_hba.conf and \
     `createdb -U postgres test`), or point QUPID_POSTGRES_URL at one";

/// The server the tests use.
pub(crate) fn url() -> String {
    std::env::var("QUPID_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A namespace no other test, process or earlier run uses.
pub(crate) fn namespace(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t_{tag}_{}_{}_{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

/// The schema of a namespace, quoted, as documented in the ledger's module docs.
pub(crate) fn schema(namespace: &str) -> String {
    format!("\"qupid_{namespace}\"")
}

/// Opens the ledger, failing the test with instructions if the server is not there.
pub(crate) async fn connect(url: &str, namespace: &str) -> PostgresLedger {
    match PostgresLedger::open(url, namespace).await {
        Ok(l) => l,
        Err(e) => panic!("cannot open a postgres ledger at {url}: {e}\n{HOW_TO_START}"),
    }
}

/// A plain connection, for arranging and inspecting raw rows. Its connection task runs on
/// the current runtime.
pub(crate) async fn raw(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach postgres at {url}: {e}\n{HOW_TO_START}"));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("raw postgres connection ended: {e}");
        }
    });
    client
}

/// Drops a namespace's schema when dropped, unless the thread is panicking: a failed test
/// keeps it for inspection.
pub(crate) struct Cleanup {
    url: String,
    namespace: String,
}

impl Cleanup {
    /// Cleans up `namespace` on `url` when dropped.
    pub(crate) fn new(url: &str, namespace: &str) -> Self {
        Cleanup {
            url: url.to_owned(),
            namespace: namespace.to_owned(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "kept the schema {} of postgres namespace {:?} for inspection",
                schema(&self.namespace),
                self.namespace
            );
            return;
        }
        let (url, ns) = (self.url.clone(), self.namespace.clone());
        // Drop may run inside a runtime: work on a thread of its own.
        let done = std::thread::spawn(move || drop_namespace(&url, &ns)).join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!(
                "could not drop postgres namespace {:?}: {e}",
                self.namespace
            ),
            Err(_) => eprintln!("dropping postgres namespace {:?} panicked", self.namespace),
        }
    }
}

/// Drops the schema of `namespace`. Blocking: starts a runtime of its own.
pub(crate) fn drop_namespace(url: &str, namespace: &str) -> Result<(), tokio_postgres::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        let task = tokio::spawn(connection);
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", schema(namespace));
        let result = client.batch_execute(&sql).await;
        drop(client);
        let _ = task.await;
        result
    })
}

/// Moves a namespace's clock by adding to `meta.clock_offset_ms` (and to
/// `meta.clock_pinned_ms`, when the clock is pinned), and cleans the namespace up when the
/// fixture is dropped.
pub(crate) struct PgClock {
    client: Arc<Client>,
    schema: String,
    _cleanup: Cleanup,
}

impl TestClock for PgClock {
    fn advance(&self, by: Duration) -> BoxFuture<'static, ()> {
        let client = self.client.clone();
        let sql = format!(
            "UPDATE {}.meta SET clock_offset_ms = clock_offset_ms + $1::bigint, \
             clock_pinned_ms = clock_pinned_ms + $1::bigint",
            self.schema
        );
        let ms = i64::try_from(by.as_millis()).expect("a short advance");
        Box::pin(async move {
            client
                .execute(&sql, &[&ms])
                .await
                .expect("move the namespace's clock");
        })
    }
}

/// Damages rows through a connection of its own: a negative token. The schema's `CHECK`
/// keeps the state from 0 to 3, and its column types keep every value a number, so a
/// negative token, time or count is what a hand edit can leave that the ledger cannot read.
pub(crate) struct NegativeTokens {
    client: Arc<Client>,
    schema: String,
}

impl Plant for NegativeTokens {
    fn plant(&self, key: &Key) -> BoxFuture<'static, ()> {
        let client = self.client.clone();
        let sql = format!(
            "INSERT INTO {}.records AS r
               (key, rev, state, token, at_ms, attempts, abandoned, superseded)
             VALUES ($1, 1, 0, -1, 0, 0, 0, false)
             ON CONFLICT (key) DO UPDATE SET rev = r.rev + 1, token = -1",
            self.schema
        );
        let key = key.as_str().as_bytes().to_vec();
        Box::pin(async move {
            client
                .execute(&sql, &[&key])
                .await
                .expect("plant a row with a negative token");
        })
    }

    fn raw(&self, key: &Key) -> BoxFuture<'static, Option<String>> {
        let client = self.client.clone();
        let sql = format!(
            "SELECT r::text FROM {}.records r WHERE key = $1",
            self.schema
        );
        let key = key.as_str().as_bytes().to_vec();
        Box::pin(async move {
            client
                .query_opt(&sql, &[&key])
                .await
                .expect("read a row")
                .map(|row| row.get(0))
        })
    }
}

/// How long one tick of the tests is: leases are 10 ticks, so real time spent inside a test
/// never expires one.
pub(crate) const TICK: Duration = Duration::from_secs(60);

/// A fresh namespace whose clock is the server's plus an offset the tests move.
pub(crate) async fn fixture() -> Fixture<PostgresLedger> {
    make_fixture(false).await
}

/// A fresh namespace whose clock is pinned (`clock_pinned_ms`) and moves only when the test
/// moves it, so that records finished in the same tick tie exactly as in the reference model.
pub(crate) async fn model_fixture() -> Fixture<PostgresLedger> {
    make_fixture(true).await
}

async fn make_fixture(pinned: bool) -> Fixture<PostgresLedger> {
    let url = url();
    let ns = namespace(if pinned { "model" } else { "conf" });
    let cleanup = Cleanup::new(&url, &ns);
    let ledger = connect(&url, &ns).await;
    let client = raw(&url).await;
    let schema = schema(&ns);
    if pinned {
        let sql = format!(
            "UPDATE {schema}.meta SET clock_pinned_ms = \
             floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
        );
        client.execute(&sql, &[]).await.expect("pin the clock");
    }
    let client = Arc::new(client);
    let plant = NegativeTokens {
        client: client.clone(),
        schema: schema.clone(),
    };
    let clock = PgClock {
        client,
        schema,
        _cleanup: cleanup,
    };
    Fixture::new(ledger, clock, TICK).with_plant(plant)
}
