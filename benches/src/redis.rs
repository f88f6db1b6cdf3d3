//! The Redis section: qupid's pipeline over a [`RedisLedger`] against a raw redis-rs loop
//! doing the least that gives the same semantics.
//!
//! The raw loop claims a key with `SET key 1 NX PX 30000` (a lease that expires; no reply
//! means a duplicate, skipped) and completes it with `SET key done` (no expiry: it blocks
//! later duplicates for good): (a) one command at a time, waiting for each reply, or (b) in
//! pipelines of 100 claims, then one pipeline of the completions. Each run works under a
//! fresh key prefix (qupid: a fresh namespace), deleted afterwards with `SCAN` + `UNLINK`.

use std::time::{Duration, Instant};

use qupid::ledger::RedisLedger;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult};

use crate::workload::{
    fresh_name, qupid_pipeline, runtime, unique, workload, Comparison, Runs, Side,
};

const PIPELINE: usize = 100;

/// The server: `QUPID_REDIS_URL`, or the local default the tests use too.
pub(crate) fn url() -> String {
    std::env::var("QUPID_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

pub(crate) async fn connect(url: &str) -> Result<MultiplexedConnection, String> {
    let client = Client::open(url).map_err(|e| format!("bad redis url {url:?}: {e}"))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("cannot connect to redis at {url}: {e}"))
}

/// The server's version and eviction policy, for the header.
async fn describe(conn: &mut MultiplexedConnection) -> RedisResult<String> {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await
        .unwrap_or_default();
    let policy = policy.get(1).cloned().unwrap_or_else(|| "?".into());
    Ok(format!("Redis {version}, maxmemory-policy {policy}"))
}

/// Deletes every key matching `pattern`.
pub(crate) async fn delete_matching(
    conn: &mut MultiplexedConnection,
    pattern: &str,
) -> RedisResult<()> {
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// (a): claim, then complete, one command at a time.
async fn raw_unpipelined(conn: &mut MultiplexedConnection, keys: &[String]) -> RedisResult<u64> {
    let mut done = 0;
    for key in keys {
        let claimed: Option<()> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async(conn)
            .await?;
        if claimed.is_none() {
            continue; // a duplicate
        }
        std::hint::black_box(key); // the no-op work and save
        redis::cmd("SET")
            .arg(key)
            .arg("done")
            .query_async::<()>(conn)
            .await?;
        done += 1;
    }
    Ok(done)
}

/// (b): a pipeline of `PIPELINE` claims, then one pipeline of the completions.
async fn raw_pipelined(conn: &mut MultiplexedConnection, keys: &[String]) -> RedisResult<u64> {
    let mut done = 0;
    for chunk in keys.chunks(PIPELINE) {
        let mut claims = redis::pipe();
        for key in chunk {
            claims
                .cmd("SET")
                .arg(key)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(30_000);
        }
        let claimed: Vec<Option<()>> = claims.query_async(conn).await?;
        let mut completes = redis::pipe();
        let mut n = 0;
        for (key, c) in chunk.iter().zip(claimed) {
            if c.is_some() {
                completes.cmd("SET").arg(key).arg("done").ignore();
                n += 1;
            }
        }
        if n > 0 {
            completes.query_async::<()>(conn).await?;
        }
        done += n;
    }
    Ok(done)
}

/// One run of a raw loop under a fresh prefix, deleted afterwards.
async fn raw_run(
    conn: &mut MultiplexedConnection,
    entries: usize,
    pipelined: bool,
) -> Result<Duration, String> {
    let prefix = format!("bench:{}:", fresh_name("raw"));
    let keys: Vec<String> = workload(entries)
        .into_iter()
        .map(|(k, _)| format!("{prefix}{k}"))
        .collect();
    let start = Instant::now();
    let done = if pipelined {
        raw_pipelined(conn, &keys).await
    } else {
        raw_unpipelined(conn, &keys).await
    };
    let d = start.elapsed();
    let cleanup = delete_matching(conn, &format!("{prefix}*")).await;
    let done = done.map_err(|e| format!("raw redis loop: {e}"))?;
    cleanup.map_err(|e| format!("deleting {prefix}*: {e}"))?;
    assert_eq!(
        done,
        unique(entries) as u64,
        "raw loop completed each unique key once"
    );
    Ok(d)
}

/// One run of qupid's pipeline in a fresh namespace, deleted afterwards.
async fn qupid_run(
    url: &str,
    conn: &mut MultiplexedConnection,
    entries: usize,
) -> Result<Duration, String> {
    let ns = fresh_name("bench");
    let ledger = RedisLedger::open(url, &ns)
        .await
        .map_err(|e| format!("cannot open a RedisLedger: {e}"))?;
    let d = qupid_pipeline(ledger, entries).await;
    delete_matching(conn, &format!("qupid:{{{ns}}}:*"))
        .await
        .map_err(|e| format!("deleting namespace {ns}: {e}"))?;
    Ok(d)
}

/// The Redis section: `runs` runs of each configuration, alternating. Fails (so the section
/// is skipped) if the server cannot be reached.
pub(crate) fn run(side: Side, entries: usize, runs: usize) -> Result<Comparison, String> {
    let rt = runtime();
    let url = url();
    rt.block_on(async {
        let mut conn = connect(&url).await?;
        let server = describe(&mut conn)
            .await
            .map_err(|e| format!("redis at {url} does not answer INFO: {e}"))?;
        let mut r = Runs::new(3);
        for _ in 0..runs {
            if side.raw() {
                r.push(0, entries, raw_run(&mut conn, entries, false).await?);
                r.push(1, entries, raw_run(&mut conn, entries, true).await?);
            }
            if side.qupid() {
                r.push(2, entries, qupid_run(&url, &mut conn, entries).await?);
            }
        }
        let labels = [
            ("(a)", "raw redis-rs, one command at a time", Some(5.0)),
            ("(b)", "raw redis-rs, pipelines of 100", Some(0.5)),
        ];
        let baselines = r.baselines(&labels);
        Ok(Comparison {
            ledger: "redis",
            setup: vec![format!(
                "{server} at {url}, one multiplexed connection for the raw loops; raw loop: \
                 SET key 1 NX PX 30000 to claim, SET key done to complete"
            )],
            entries,
            runs,
            baselines,
            qupid: r
                .rate(2)
                .map(|rate| ("qupid `Pipeline` + `RedisLedger`".to_owned(), rate)),
        })
    })
}
