//! Fixtures: a fresh ledger per test on each backend, cleaned up afterwards (and kept when
//! the test fails, for inspection). A server that cannot be reached fails the test with a
//! message that says how to start one; it never skips it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use qupid::{MemoryLedger, PostgresLedger, RedisLedger, SqliteLedger};

use super::Fx;

/// A namespace no other test, process or earlier run uses.
pub fn namespace(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "web_{tag}_{}_{}_{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

/// An empty memory ledger.
pub async fn memory() -> Fx<MemoryLedger> {
    Fx {
        ledger: Arc::new(MemoryLedger::new()),
        namespace: None,
        _cleanup: Box::new(()),
    }
}

/// A SQLite ledger in a temporary directory, deleted afterwards.
pub async fn sqlite() -> Fx<SqliteLedger> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ledger = SqliteLedger::open(dir.path().join("ledger.db"))
        .await
        .expect("open a sqlite ledger");
    Fx {
        ledger: Arc::new(ledger),
        namespace: None,
        _cleanup: Box::new(dir),
    }
}

const REDIS_HOW: &str = "the redis tests need a Redis 7 server: start one with \
     `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no` \
     (apt-get install redis-server), or point QUPID_REDIS_URL at one";

const POSTGRES_HOW: &str = "the postgres tests need a PostgreSQL server with a database \
     `test` that user `postgres` can reach without a password: `pg_ctlcluster \
     --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or point QUPID_POSTGRES_URL \
     at one";

/// The Redis server the tests use.
pub fn redis_url() -> String {
    std::env::var("QUPID_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// The PostgreSQL server the tests use.
pub fn postgres_url() -> String {
    std::env::var("QUPID_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A Redis ledger in a fresh namespace, whose keys are deleted afterwards.
pub async fn redis() -> Fx<RedisLedger> {
    let url = redis_url();
    let ns = namespace("r");
    let ledger = RedisLedger::open(&url, &ns)
        .await
        .unwrap_or_else(|e| panic!("cannot open a redis ledger at {url}: {e}\n{REDIS_HOW}"));
    Fx {
        ledger: Arc::new(ledger),
        namespace: Some(ns.clone()),
        _cleanup: Box::new(RedisCleanup { url, ns }),
    }
}

/// A PostgreSQL ledger in a fresh namespace, whose schema is dropped afterwards.
pub async fn postgres() -> Fx<PostgresLedger> {
    let url = postgres_url();
    let ns = namespace("p");
    let cleanup = PgCleanup {
        url: url.clone(),
        ns: ns.clone(),
    };
    let ledger = PostgresLedger::open(&url, &ns)
        .await
        .unwrap_or_else(|e| panic!("cannot open a postgres ledger at {url}: {e}\n{POSTGRES_HOW}"));
    Fx {
        ledger: Arc::new(ledger),
        namespace: Some(ns),
        _cleanup: Box::new(cleanup),
    }
}

struct RedisCleanup {
    url: String,
    ns: String,
}

impl Drop for RedisCleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept redis namespace {:?} for inspection", self.ns);
            return;
        }
        let result = (|| -> redis::RedisResult<()> {
            let mut c = redis::Client::open(self.url.as_str())?.get_connection()?;
            // The namespace is letters, digits and `_`: nothing to escape in the pattern.
            let pattern = format!("qupid:{{{}}}:*", self.ns);
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .cursor_arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut c)?;
                if !keys.is_empty() {
                    redis::cmd("UNLINK").arg(keys).exec(&mut c)?;
                }
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        })();
        if let Err(e) = result {
            eprintln!("could not delete redis namespace {:?}: {e}", self.ns);
        }
    }
}

struct PgCleanup {
    url: String,
    ns: String,
}

impl Drop for PgCleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept postgres schema \"qupid_{}\" for inspection", self.ns);
            return;
        }
        let (url, ns) = (self.url.clone(), self.ns.clone());
        // Drop may run inside a runtime: work on a thread of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                let task = tokio::spawn(connection);
                let sql = format!("DROP SCHEMA IF EXISTS \"qupid_{ns}\" CASCADE");
                let result = client.batch_execute(&sql).await;
                drop(client);
                let _ = task.await;
                result
            })
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop postgres namespace {:?}: {e}", self.ns),
            Err(_) => eprintln!("dropping postgres namespace {:?} panicked", self.ns),
        }
    }
}
