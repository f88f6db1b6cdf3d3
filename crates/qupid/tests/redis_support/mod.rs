//! Shared by the Redis tests: the server, fresh namespaces, clocks that move, cleanup, and
//! spare servers to break.
//!
//! The tests use `QUPID_REDIS_URL`, or `redis://127.0.0.1:6379/` by default. A server that
//! cannot be reached fails the tests (it never skips them) with a message saying how to start
//! one.

#![allow(dead_code)] // each test file uses its own part

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use qupid::ledger::RedisLedger;
use qupid::Key;
use qupid_testkit::{Fixture, Plant, TestClock};
use redis::aio::MultiplexedConnection;

/// What to do when no server answers.
pub(crate) const HOW_TO_START: &str = "the redis tests need a Redis 7 server: start one with \
     `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no` \
     (apt-get install redis-server), or point QUPID_REDIS_URL at one";

/// The server the tests use.
pub(crate) fn url() -> String {
    std::env::var("QUPID_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// A namespace no other test, process or earlier run uses.
pub(crate) fn namespace(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "test_{tag}_{}_{}_{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

/// The name of one of `namespace`'s keys, as documented in the ledger's module docs.
pub(crate) fn redis_key(namespace: &str, suffix: &str) -> String {
    format!("qupid:{{{namespace}}}:{suffix}")
}

/// The names of one of the keys every shard of `namespace` has (`shards` 1: the unsharded
/// namespace's), as documented in the ledger's module docs.
pub(crate) fn shard_keys(namespace: &str, shards: u16, suffix: &str) -> Vec<String> {
    if shards == 1 {
        return vec![redis_key(namespace, suffix)];
    }
    (0..shards)
        .map(|i| format!("qupid:{{{namespace}:{i}/{shards}}}:{suffix}"))
        .collect()
}

/// Opens the ledger, failing the test with instructions if the server is not there.
pub(crate) async fn connect(url: &str, namespace: &str) -> RedisLedger {
    match RedisLedger::open(url, namespace).await {
        Ok(l) => l,
        Err(e) => panic!("cannot open a redis ledger at {url}: {e}\n{HOW_TO_START}"),
    }
}

/// A plain connection, for arranging and inspecting raw keys.
pub(crate) async fn raw(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url)
        .unwrap_or_else(|e| panic!("QUPID_REDIS_URL {url:?} is not a redis url: {e}"));
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot reach redis at {url}: {e}\n{HOW_TO_START}"))
}

/// Deletes a namespace's keys when dropped, unless the thread is panicking: a failed test
/// keeps them for inspection.
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
                "kept the keys of redis namespace {:?} for inspection: {}*",
                self.namespace,
                redis_key(&self.namespace, "")
            );
            return;
        }
        if let Err(e) = delete_namespace(&self.url, &self.namespace) {
            eprintln!("could not delete redis namespace {:?}: {e}", self.namespace);
        }
    }
}

/// Deletes every key of `namespace` (SCAN, never KEYS). Blocking: runs from `Drop`.
pub(crate) fn delete_namespace(url: &str, namespace: &str) -> redis::RedisResult<()> {
    let mut c = redis::Client::open(url)?.get_connection()?;
    // `qupid:{NS}:…` and every shard's `qupid:{NS:i}:…`.
    let pattern = format!("qupid:{{{}[}}:]*", glob_escape(namespace));
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

/// `s` with Redis glob characters escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Moves a namespace's clock by `INCRBY` on one of its clock keys, through a connection to
/// one server or to a cluster, and cleans the namespace up (if told to) when the fixture is
/// dropped.
pub(crate) struct RedisClock<C = MultiplexedConnection> {
    pub(crate) conn: C,
    /// The clock key of every shard: all move together.
    pub(crate) keys: Vec<String>,
    pub(crate) _cleanup: Option<Cleanup>,
}

impl<C> TestClock for RedisClock<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    fn advance(&self, by: Duration) -> BoxFuture<'static, ()> {
        let (mut conn, keys) = (self.conn.clone(), self.keys.clone());
        let ms = u64::try_from(by.as_millis()).expect("a short advance");
        Box::pin(async move {
            for key in keys {
                let _: i64 = redis::cmd("INCRBY")
                    .arg(&key)
                    .arg(ms)
                    .query_async(&mut conn)
                    .await
                    .expect("move the namespace's clock");
            }
        })
    }
}

/// Plants a list where a record string belongs (a key another program wrote into the
/// namespace), through a connection to one server or to a cluster.
pub(crate) struct ForeignKeys<C = MultiplexedConnection> {
    pub(crate) conn: C,
    /// The ledger, which names each key's record (in its shard).
    pub(crate) ledger: RedisLedger,
}

impl<C> Plant for ForeignKeys<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    fn plant(&self, key: &Key) -> BoxFuture<'static, ()> {
        let mut conn = self.conn.clone();
        let record = self.ledger.record_key(key);
        Box::pin(async move {
            let _: () = redis::pipe()
                .atomic()
                .del(&record)
                .rpush(&record, "not a qupid record")
                .query_async(&mut conn)
                .await
                .expect("plant a list at a record key");
        })
    }

    /// The record key's value (`DUMP`, which shows any type) and the key's score in each of
    /// the namespace's sorted sets.
    fn raw(&self, key: &Key) -> BoxFuture<'static, Option<String>> {
        let mut conn = self.conn.clone();
        let record = self.ledger.record_key(key);
        let member = key.as_str().as_bytes().to_vec();
        // The shard's keys share the record's prefix, `qupid:{TAG}:`.
        let tag_end = record
            .windows(2)
            .position(|w| w == b"}:")
            .expect("a hash tag in the record key");
        let base = String::from_utf8(record[..tag_end + 2].to_vec()).expect("a UTF-8 prefix");
        let sets: Vec<String> = [
            "idx:queued",
            "idx:running",
            "idx:completed",
            "idx:dead",
            "fin:completed",
            "fin:dead",
        ]
        .iter()
        .map(|s| format!("{base}{s}"))
        .collect();
        Box::pin(async move {
            let dump: Option<Vec<u8>> = redis::cmd("DUMP")
                .arg(&record)
                .query_async(&mut conn)
                .await
                .expect("DUMP");
            let mut scores = Vec::new();
            for set in &sets {
                let score: Option<f64> = redis::cmd("ZSCORE")
                    .arg(set)
                    .arg(&member)
                    .query_async(&mut conn)
                    .await
                    .expect("ZSCORE");
                scores.push(score);
            }
            dump.map(|d| format!("{d:?} in indexes {scores:?}"))
        })
    }
}

/// The Redis key of `key`'s record in `namespace`, as documented in the ledger's module docs.
pub(crate) fn record_key(namespace: &str, key: &Key) -> Vec<u8> {
    let mut k = redis_key(namespace, "r:").into_bytes();
    k.extend_from_slice(key.as_str().as_bytes());
    k
}

/// A fresh namespace whose clock is the server's `TIME` plus an offset the tests move
/// (`clock_offset_ms`), one second per tick.
pub(crate) async fn fixture() -> Fixture<RedisLedger> {
    make_fixture(false).await
}

/// A fresh namespace whose clock is pinned (`clock_pinned_ms`) and moves only when the test
/// moves it, so that records finished in the same tick tie exactly as in the reference model.
pub(crate) async fn model_fixture() -> Fixture<RedisLedger> {
    make_fixture(true).await
}

async fn make_fixture(pinned: bool) -> Fixture<RedisLedger> {
    make_sharded_fixture(pinned, 1).await
}

/// A fresh namespace split into `shards` (1: unsharded), its clock pinned or not as
/// [`model_fixture`] and [`fixture`] say; every shard's clock moves together.
pub(crate) async fn make_sharded_fixture(pinned: bool, shards: u16) -> Fixture<RedisLedger> {
    let url = url();
    let ns = namespace(if pinned { "model" } else { "conf" });
    let ledger = match RedisLedger::builder(&url, &ns).shards(shards).open().await {
        Ok(l) => l,
        Err(e) => panic!("cannot open a redis ledger at {url}: {e}\n{HOW_TO_START}"),
    };
    let mut conn = raw(&url).await;
    let keys = if pinned {
        let (s, us): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .expect("TIME");
        let keys = shard_keys(&ns, shards, "clock_pinned_ms");
        for key in &keys {
            redis::cmd("SET")
                .arg(key)
                .arg(s * 1000 + us / 1000)
                .exec_async(&mut conn)
                .await
                .expect("pin the clock");
        }
        keys
    } else {
        shard_keys(&ns, shards, "clock_offset_ms")
    };
    let plant = ForeignKeys {
        conn: conn.clone(),
        ledger: ledger.clone(),
    };
    let clock = RedisClock {
        conn,
        keys,
        _cleanup: Some(Cleanup::new(&url, &ns)),
    };
    let fx = Fixture::new(ledger, clock, Duration::from_secs(1)).with_plant(plant);
    if shards > 1 {
        fx.with_tokens_per_key()
    } else {
        fx
    }
}

/// A throwaway `redis-server` on a free port, killed when dropped: for breaking things
/// (eviction policies, ACLs, a server that goes away) without touching the shared server.
pub(crate) struct SpareServer {
    child: Child,
    port: u16,
}

impl SpareServer {
    /// Starts a server on a free port with `args` added to its command line.
    pub(crate) fn start(args: &[&str]) -> SpareServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port, args)
    }

    /// Starts a server on `port` (again, after [`kill`](Self::kill)).
    pub(crate) fn start_on(port: u16, args: &[&str]) -> SpareServer {
        let dir = std::env::temp_dir();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server for a spare server: {e}\n{HOW_TO_START}")
            });
        let server = SpareServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = redis::Client::open(server.url().as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            match ping {
                Ok(_) => return server,
                Err(e) if Instant::now() > deadline => {
                    panic!("the spare redis-server on port {port} did not answer: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Its port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Stops it at once (SIGKILL) and waits for it to exit.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SpareServer {
    fn drop(&mut self) {
        self.kill();
    }
}
