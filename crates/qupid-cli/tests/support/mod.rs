//! Shared by the CLI tests: a ledger of each kind filled with records in every state, the
//! real `qupid` binary pointed at it, and cleanup.
//!
//! Redis and PostgreSQL are the servers the library tests use: `QUPID_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`) and `QUPID_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). A server that cannot be reached fails the
//! test with a message saying how to start one; it never skips it. Each test works in a
//! namespace of its own, dropped when the test passes and kept when it fails.

#![allow(dead_code)] // each test file uses its own part

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use assert_cmd::Command;
use qupid::clock::{Clock, Timestamp};
use qupid::ledger::{Claim, Failure, Stats};
use qupid::{AnyLedger, Key, Ledger, LedgerAdmin, Offer, Policy, SqliteLedger, Version};
use serde_json::Value;

/// How to start the servers (`scripts/test` does it).
const HOW_TO_START: &str = "the CLI tests need Redis 7 on 127.0.0.1:6379 and PostgreSQL on \
     127.0.0.1:5432 with a database `test` that user `postgres` reaches without a password: \
     `scripts/test` starts both (or point QUPID_REDIS_URL / QUPID_POSTGRES_URL at yours)";

/// How long ago the "old" records finished: past a `--older-than 7d` purge.
pub(crate) const OLD: Duration = Duration::from_secs(10 * 86_400);

/// Leases long enough that none expires during a test.
pub(crate) const LEASE: Duration = Duration::from_secs(3_600);

/// What [`Backend::fill`] puts in a ledger, by state, in key order.
pub(crate) const QUEUED: &[&str] = &["queued/1"];
pub(crate) const RUNNING: &[&str] = &["running/1", "running/2"];
/// Completed: two that finished [`OLD`] ago, four just now (one key has a newline in it).
pub(crate) const OLD_COMPLETED: &[&str] = &["old/done/1", "old/done/2"];
pub(crate) const COMPLETED: &[&str] = &["done/1", "done/2", "done/3", "multi\nline"];
/// Dead: one that died [`OLD`] ago, two just now.
pub(crate) const OLD_DEAD: &[&str] = &["old/dead/1"];
pub(crate) const DEAD: &[&str] = &["dead/1", "dead/2"];
/// The error `dead/1` died of: two lines.
pub(crate) const DEAD_ERROR: &str = "disk full\nretry later";

/// The counts of a freshly filled ledger.
pub(crate) fn filled() -> Stats {
    let mut stats = Stats::default();
    (stats.queued, stats.running, stats.completed, stats.dead) = (1, 2, 6, 3);
    stats
}

/// Which ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sqlite,
    Redis,
    Postgres,
}

/// A ledger for one test: a SQLite file in a temporary folder, or a fresh namespace on a
/// server, cleaned up when dropped (unless the test failed).
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) kind: Kind,
    pub(crate) url: String,
    pub(crate) namespace: String,
    dir: Option<tempfile::TempDir>,
}

fn unique(sep: char) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "cli{sep}{}{sep}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn redis_url() -> String {
    std::env::var("QUPID_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

fn postgres_url() -> String {
    std::env::var("QUPID_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Runs `f` to completion on a runtime of its own: the tests are synchronous, because the
/// binary they drive blocks.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

impl Backend {
    /// An empty SQLite ledger file.
    pub(crate) fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("ledger.db");
        let url = format!("sqlite://{}", path.display());
        let b = Backend {
            kind: Kind::Sqlite,
            url,
            namespace: "default".to_owned(),
            dir: Some(dir),
        };
        // The tool never creates a ledger file: make it.
        drop(block_on(b.open()));
        b
    }

    /// A fresh namespace (`cli_<pid>_<n>`) on the Redis server.
    pub(crate) fn redis() -> Backend {
        let url = redis_url();
        if let Err(e) = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        {
            panic!("cannot reach redis at {url}: {e}\n{HOW_TO_START}");
        }
        Backend {
            kind: Kind::Redis,
            url,
            namespace: unique('_'),
            dir: None,
        }
    }

    /// A fresh namespace (`cli_<pid>_<n>`) on the PostgreSQL server.
    pub(crate) fn postgres() -> Backend {
        let url = postgres_url();
        if let Err(e) = block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            let task = tokio::spawn(conn);
            let r = client.simple_query("SELECT 1").await.map(drop);
            drop(client);
            let _ = task.await;
            r
        }) {
            panic!("cannot reach postgres at {url}: {e}\n{HOW_TO_START}");
        }
        Backend {
            kind: Kind::Postgres,
            url,
            namespace: unique('_'),
            dir: None,
        }
    }

    /// The SQLite file, for SQLite ledgers.
    pub(crate) fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("ledger.db"))
    }

    /// The `qupid` binary, pointed at this ledger by `--ledger` and `--namespace`, with
    /// nothing on stdin.
    pub(crate) fn qupid(&self) -> Command {
        let mut cmd = qupid();
        cmd.args(["--ledger", &self.url, "--namespace", &self.namespace]);
        cmd
    }

    /// Opens the ledger through the library.
    pub(crate) async fn open(&self) -> AnyLedger {
        AnyLedger::open(&self.url, &self.namespace)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}\n{HOW_TO_START}", self.url))
    }

    /// Makes the ledger exist without records, as a pipeline that ran and whose records are
    /// gone leaves it: a key offered and removed through the library (a Redis namespace
    /// exists once it has drawn a token; a PostgreSQL one once it has its schema).
    pub(crate) fn touch(&self) {
        block_on(async {
            let l = self.open().await;
            let k = Key::new("touched").expect("a key");
            l.offer(&policy(), &[Offer::new(k.clone())])
                .await
                .expect("offer");
            l.remove(&[k], true).await.expect("remove");
        });
    }

    /// Counts per state, read through the library.
    pub(crate) fn stats(&self) -> Stats {
        block_on(async { self.open().await.stats().await.expect("stats") })
    }

    /// Whether `key` has a record, read through the library.
    pub(crate) fn exists(&self, key: &str) -> bool {
        block_on(async {
            let key = Key::new(key).expect("a key");
            self.open().await.get(&key).await.expect("get").is_some()
        })
    }

    /// Fills the ledger with [`filled`]: old finished records first (by a clock set [`OLD`]
    /// back), then fresh ones in every state.
    pub(crate) fn fill(&self) {
        block_on(async {
            match self.kind {
                Kind::Sqlite => {
                    let path = self.path().expect("a sqlite file");
                    let old = SqliteLedger::builder(path)
                        .clock(Past(OLD))
                        .open()
                        .await
                        .expect("open the file with a clock in the past");
                    fill_old(&old).await;
                }
                Kind::Redis | Kind::Postgres => {
                    let ledger = self.open().await;
                    self.set_clock_offset(-(OLD.as_millis() as i64)).await;
                    fill_old(&ledger).await;
                    self.set_clock_offset(0).await;
                }
            }
            fill_fresh(&self.open().await).await;
        });
        assert_eq!(self.stats(), filled(), "the fixture");
    }

    /// Offers `names` through the library: they are Queued, under leases that outlast the
    /// test.
    pub(crate) fn queue(&self, names: &[&str]) {
        block_on(async { queue(&self.open().await, names).await });
    }

    /// Offers `names` (they are Queued) under leases that expired an hour ago: offered by a
    /// clock two leases behind, as by a process that then crashed.
    pub(crate) fn queue_expired(&self, names: &[&str]) {
        let behind = 2 * LEASE;
        block_on(async {
            match self.kind {
                Kind::Sqlite => {
                    let path = self.path().expect("a sqlite file");
                    let past = SqliteLedger::builder(path)
                        .clock(Past(behind))
                        .open()
                        .await
                        .expect("open the file with a clock in the past");
                    queue(&past, names).await;
                }
                Kind::Redis | Kind::Postgres => {
                    let ledger = self.open().await;
                    self.set_clock_offset(-(behind.as_millis() as i64)).await;
                    queue(&ledger, names).await;
                    self.set_clock_offset(0).await;
                }
            }
        });
    }

    /// Writes under `key` something the ledger cannot read, as a hand edit or another program
    /// might: a row with state code 9 (SQLite), a list where a record string belongs (Redis),
    /// a row with a negative token (PostgreSQL, whose `CHECK` keeps the state valid).
    pub(crate) fn plant(&self, key: &str) {
        match self.kind {
            Kind::Sqlite => {
                let path = self.path().expect("a sqlite file");
                let conn = rusqlite::Connection::open(path).expect("a raw sqlite connection");
                conn.execute_batch("PRAGMA ignore_check_constraints = ON")
                    .expect("pragma");
                conn.execute(
                    "INSERT INTO qupid_entries
                       (key, state, superseded, attempts, abandoned, token, at)
                     VALUES (?1, 9, 0, 0, 0, 1, 0)",
                    [key.as_bytes()],
                )
                .expect("plant a row with state code 9");
            }
            Kind::Redis => {
                let mut c = redis::Client::open(self.url.as_str())
                    .and_then(|c| c.get_connection())
                    .expect("a redis connection");
                redis::cmd("RPUSH")
                    .arg(format!("qupid:{{{}}}:r:{key}", self.namespace))
                    .arg("not a qupid record")
                    .exec(&mut c)
                    .expect("plant a list at a record key");
            }
            Kind::Postgres => block_on(async {
                let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                    .await
                    .expect("a postgres connection");
                let task = tokio::spawn(conn);
                let sql = format!(
                    "INSERT INTO \"qupid_{}\".records
                       (key, rev, state, token, at_ms, attempts, abandoned, superseded)
                     VALUES ($1, 1, 0, -1, 0, 0, 0, false)",
                    self.namespace
                );
                client
                    .execute(&sql, &[&key.as_bytes()])
                    .await
                    .expect("plant a row with a negative token");
                drop(client);
                let _ = task.await;
            }),
        }
    }

    /// Moves this namespace's clock by `ms` from the server's (the servers' documented test
    /// and operations facility).
    async fn set_clock_offset(&self, ms: i64) {
        match self.kind {
            Kind::Sqlite => unreachable!("a sqlite ledger's clock is the process's"),
            Kind::Redis => {
                let mut c = redis::Client::open(self.url.as_str())
                    .and_then(|c| c.get_connection())
                    .expect("a redis connection");
                redis::cmd("SET")
                    .arg(format!("qupid:{{{}}}:clock_offset_ms", self.namespace))
                    .arg(ms)
                    .exec(&mut c)
                    .expect("move the namespace's clock");
            }
            Kind::Postgres => {
                let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                    .await
                    .expect("a postgres connection");
                let task = tokio::spawn(conn);
                let sql = format!(
                    "UPDATE \"qupid_{}\".meta SET clock_offset_ms = {ms}",
                    self.namespace
                );
                client
                    .batch_execute(&sql)
                    .await
                    .expect("move the namespace's clock");
                drop(client);
                let _ = task.await;
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if std::thread::panicking() {
            match self.kind {
                Kind::Sqlite => {
                    if let Some(dir) = self.dir.take() {
                        eprintln!(
                            "kept the ledger file for inspection: {}",
                            dir.keep().display()
                        );
                    }
                }
                _ => eprintln!(
                    "kept the namespace {:?} at {} for inspection",
                    self.namespace, self.url
                ),
            }
            return;
        }
        let result = match self.kind {
            Kind::Sqlite => Ok(()),
            Kind::Redis => drop_redis(&self.url, &self.namespace).map_err(|e| e.to_string()),
            Kind::Postgres => drop_postgres(&self.url, &self.namespace).map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            eprintln!("could not drop the namespace {:?}: {e}", self.namespace);
        }
    }
}

/// Deletes every key of a Redis namespace (SCAN, never KEYS).
fn drop_redis(url: &str, namespace: &str) -> redis::RedisResult<()> {
    let mut c = redis::Client::open(url)?.get_connection()?;
    // The test namespaces hold no glob characters.
    let pattern = format!("qupid:{{{namespace}}}:*");
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
}

/// Drops a PostgreSQL namespace's schema.
fn drop_postgres(url: &str, namespace: &str) -> Result<(), tokio_postgres::Error> {
    block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let task = tokio::spawn(conn);
        let sql = format!("DROP SCHEMA IF EXISTS \"qupid_{namespace}\" CASCADE");
        let r = client.batch_execute(&sql).await;
        drop(client);
        let _ = task.await;
        r
    })
}

/// The `qupid` binary with no ledger settings from the environment and nothing on stdin.
pub(crate) fn qupid() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qupid"));
    cmd.env_remove("QUPID_LEDGER")
        .env_remove("QUPID_NAMESPACE")
        .write_stdin("");
    cmd
}

/// The JSON a command printed.
pub(crate) fn json(output: &[u8]) -> Value {
    serde_json::from_slice(output).unwrap_or_else(|e| {
        panic!(
            "expected one JSON value, found {:?}: {e}",
            String::from_utf8_lossy(output)
        )
    })
}

/// A clock `ago` behind the wall clock.
#[derive(Debug)]
struct Past(Duration);

impl Clock for Past {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(Timestamp::now_system().as_millis() - self.0.as_millis() as u64)
    }
}

/// One failed attempt makes a key Dead; leases outlast the test.
fn policy() -> Policy {
    let mut p = Policy::default();
    p.max_attempts = 1;
    p.lease = LEASE;
    p
}

fn keys(keys: &[&str]) -> Vec<Key> {
    keys.iter().map(|k| Key::new(k).expect("a key")).collect()
}

/// Offers `keys` at version `v1`: they are Queued. Answers their claims.
async fn queue(l: &impl Ledger, names: &[&str]) -> Vec<Claim> {
    let v1 = Version::new("v1").expect("a version");
    let offers: Vec<Offer> = keys(names)
        .into_iter()
        .map(|k| Offer::new(k).with_version(v1.clone()))
        .collect();
    let offered = l.offer(&policy(), &offers).await.expect("offer");
    offers
        .into_iter()
        .zip(offered)
        .map(|(o, r)| Claim {
            key: o.key,
            token: r.lease().expect("accepted").token,
        })
        .collect()
}

/// Offers and starts `keys`: they are Running.
async fn run(l: &impl Ledger, names: &[&str]) -> Vec<Claim> {
    let claims = queue(l, names).await;
    for r in l.start(&policy(), &claims).await.expect("start") {
        r.expect("started");
    }
    claims
}

/// Runs `keys` to Completed.
async fn complete(l: &impl Ledger, names: &[&str]) {
    let claims = run(l, names).await;
    for r in l.complete(&claims).await.expect("complete") {
        r.expect("completed");
    }
}

/// Runs `keys` to Dead with `error`.
async fn kill(l: &impl Ledger, names: &[&str], error: &str) {
    let failures: Vec<Failure> = run(l, names)
        .await
        .into_iter()
        .map(|claim| Failure {
            claim,
            error: error.to_owned(),
        })
        .collect();
    for r in l.fail(&policy(), &failures).await.expect("fail") {
        r.expect("failed");
    }
}

async fn fill_old(l: &impl Ledger) {
    complete(l, OLD_COMPLETED).await;
    kill(l, OLD_DEAD, "boom").await;
}

async fn fill_fresh(l: &impl Ledger) {
    complete(l, COMPLETED).await;
    kill(l, &DEAD[..1], DEAD_ERROR).await;
    kill(l, &DEAD[1..], "boom").await;
    queue(l, QUEUED).await;
    run(l, RUNNING).await;
    // A newer version of a running key is remembered.
    let newer = Offer::new(Key::new(RUNNING[1]).expect("a key"))
        .with_version(Version::new("v2").expect("a version"));
    let offered = l.offer(&policy(), &[newer]).await.expect("offer");
    assert!(offered[0].lease().is_none(), "a duplicate");
}

/// Makes a path read-only for this process, root included, until dropped: the permission
/// bits (`chmod a-w`), and for root, whom those do not stop, the immutable attribute
/// (`chattr +i`, which needs root and a file system that has it, such as ext4).
#[derive(Debug)]
pub(crate) struct Locked {
    path: PathBuf,
    immutable: bool,
}

impl Locked {
    pub(crate) fn new(path: &std::path::Path) -> Locked {
        use std::os::unix::fs::PermissionsExt;
        let mode = if path.is_dir() { 0o555 } else { 0o444 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let immutable = is_root();
        if immutable {
            let status = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .expect("run chattr (e2fsprogs): as root, permission bits do not stop writes");
            assert!(status.success(), "chattr +i {}", path.display());
        }
        Locked {
            path: path.to_owned(),
            immutable,
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.path)
                .status();
        }
        let mode = if self.path.is_dir() { 0o755 } else { 0o644 };
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode));
    }
}

/// Whether this process runs as root (effective user id 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
