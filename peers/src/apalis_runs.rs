//! apalis 1.0 on each of its storages: memory, SQLite, Redis, PostgreSQL.
//!
//! Every entry is pushed as a task whose idempotency key is the entry's key
//! (`TaskBuilder::idempotency_key`), apalis's unique-job mechanism; each storage enforces it:
//!
//! - `MemoryStorage`: a `HashSet` of keys in the sink; a repeated key is dropped on push.
//! - `SqliteStorage`: a unique index on `(job_type, idempotency_key)`, `ON CONFLICT DO NOTHING`.
//! - `RedisStorage`: `SETNX {queue}:idempotency:KEY` in the push script; but with the
//!   default `idempotency_ttl` (`None`, "keys do not expire") the script then runs
//!   `EXPIRE key 0`, which deletes the key, so duplicates go through. `apalis-redis-ttl`
//!   sets a TTL of a day, which makes it work.
//! - `PostgresStorage`: a unique index on `(job_type, idempotency_key)`, but the batched
//!   `INSERT … SELECT unnest(…)` has no `ON CONFLICT`, so one repeated key fails the whole
//!   batch; such a batch is pushed again one task at a time, and a task refused as a
//!   duplicate is skipped (what a user of the batch push has to write).
//!
//! Workers are built as the READMEs show: `.concurrency(64)` (a tower concurrency limit),
//! `.parallelize(tokio::spawn)` (each task on the multi-threaded runtime), and for the
//! durable storages `Config::batch_size(64)` (one fetch fills every free slot; the default
//! is 10) and a poll interval of 100 ms for when the queue runs dry (apalis-sqlite's config
//! example; the PostgreSQL storage also listens with `with_pubsub()`, its README's
//! low-latency setup). Everything else is apalis's defaults: tasks are locked when fetched,
//! results persisted, heartbeats every 30 s.
//!
//! apalis has no "run until the queue is empty", so a watcher stops the worker once the
//! producer is done, every key has been processed and nothing has been processed for a
//! quiet period (so a duplicate processed late is still counted); the clock stops at the end
//! of the last handler call, not at the stop, so the quiet period costs apalis nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_redis::RedisStorage;
use apalis_sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteStorage};
use futures::stream;
use serde::{Deserialize, Serialize};

use crate::servers::{
    fresh_name, postgres_exec, postgres_url, postgres_url_for, redis_delete, redis_url, TempDir,
};
use crate::tally::{Outcome, Tally};
use crate::Store;

/// Tasks per push (one transaction, script or statement per push).
const PUSH_BATCH: usize = 256;
/// Tasks fetched at once by a durable storage's worker.
const FETCH_BATCH: usize = 64;
/// How often an idle worker polls a durable storage.
const POLL: Duration = Duration::from_millis(100);

/// A task's arguments: the record, as a user would push it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The entry's key (also the task's idempotency key).
    key: String,
    /// The entry's payload: its index in the workload.
    n: u64,
}

/// The job: no work; count the key.
async fn job(record: Record, tally: Data<Arc<Tally>>) -> Result<(), BoxDynError> {
    std::hint::black_box(&record.key);
    tally.hit(record.n);
    Ok(())
}

/// The entries as apalis tasks, keyed for de-duplication, in batches of [`PUSH_BATCH`].
fn tasks(work: Vec<(String, u64)>) -> Vec<Vec<Task<Record>>> {
    let all: Vec<Task<Record>> = work
        .into_iter()
        .map(|(key, n)| {
            TaskBuilder::new(Record {
                key: key.clone(),
                n,
            })
            .idempotency_key(&key)
            .build()
        })
        .collect();
    all.chunks(PUSH_BATCH).map(<[_]>::to_vec).collect()
}

/// What the producer and the watcher share.
#[derive(Debug, Default)]
struct Progress {
    /// The producer pushed every task.
    pushed: AtomicBool,
    /// Why the producer gave up, if it did.
    failed: Mutex<Option<String>>,
}

impl Progress {
    /// Records the first reason the run failed.
    fn fail(&self, why: String) {
        self.failed.lock().expect("lock").get_or_insert(why);
    }
}

/// Waits until the producer is done, every key was processed, and nothing was processed
/// for `quiet`; or until the limit, or a producer error. Answers why the run failed, if so.
async fn watch(
    tally: &Tally,
    progress: &Progress,
    quiet: Duration,
    deadline: Instant,
    limit: Duration,
) -> Option<String> {
    loop {
        if let Some(why) = progress.failed.lock().expect("lock").clone() {
            return Some(why);
        }
        let idle = tally.elapsed().saturating_sub(tally.until_last());
        if progress.pushed.load(Ordering::Acquire) && tally.all_seen() && idle >= quiet {
            return None;
        }
        if Instant::now() >= deadline {
            let (seen, all) = tally.seen();
            return Some(format!(
                "timed out after {} s with {seen} of {all} keys processed{}",
                limit.as_secs(),
                if progress.pushed.load(Ordering::Acquire) {
                    ""
                } else {
                    " (still pushing)"
                }
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Builds the worker on `$backend` and runs it until the watcher stops it. Answers the
/// outcome. A macro because the worker's type bounds are apalis's own, long, and differ by
/// storage.
macro_rules! drive {
    ($backend:expr, $tally:expr, $progress:expr, $n:expr, $workers:expr, $quiet:expr, $limit:expr) => {{
        let (tally, progress): (Arc<Tally>, Arc<Progress>) = ($tally, $progress);
        let deadline = Instant::now() + $limit;
        let verdict: Arc<Mutex<Option<String>>> = Arc::default();
        let worker = WorkerBuilder::new(fresh_name("peers"))
            .backend($backend)
            .data(tally.clone())
            .concurrency($workers)
            .parallelize(tokio::spawn)
            .build(job);
        let (t, p, v) = (tally.clone(), progress.clone(), verdict.clone());
        let running = worker.run_with_ctx(move |ctx| {
            let (t, p, v) = (t.clone(), p.clone(), v.clone());
            async move {
                let why = watch(&t, &p, $quiet, deadline, $limit).await;
                *v.lock().expect("lock") = why;
                ctx.stop()
            }
        });
        // The worker waits for in-flight tasks when stopped; give it a little beyond the limit.
        let ran = tokio::time::timeout($limit + Duration::from_secs(30), running).await;
        let why = verdict.lock().expect("lock").clone();
        let why = match ran {
            Ok(Ok(())) => why,
            Ok(Err(e)) => Some(why.unwrap_or_else(|| format!("worker: {e}"))),
            Err(_) => Some(why.unwrap_or_else(|| "the worker did not stop".to_owned())),
        };
        let elapsed = if why.is_some() {
            $limit
        } else {
            tally.until_last()
        };
        tally.outcome($n, elapsed, why)
    }};
}

/// One run of `work` through apalis on `store`, `workers` tasks at once; `ttl`: give the
/// Redis storage's idempotency keys an expiry (1 day).
pub async fn run(
    store: Store,
    ttl: bool,
    work: Vec<(String, u64)>,
    workers: usize,
    limit: Duration,
) -> Result<Outcome, String> {
    match store {
        Store::Memory => Ok(memory(work, workers, limit).await),
        Store::Sqlite => sqlite(work, workers, limit).await,
        Store::Redis => redis(work, ttl, workers, limit).await,
        Store::Postgres => postgres(work, workers, limit).await,
    }
}

/// `MemoryStorage`, as its README shows it: push everything, then run the worker. (Pushing
/// while the worker runs would need the storage's sink from `MemoryStorage::new_with`, and
/// that sink `try_lock().unwrap()`s a lock the worker also takes, so it can panic.) The clock
/// covers the push and the processing.
async fn memory(work: Vec<(String, u64)>, workers: usize, limit: Duration) -> Outcome {
    let n = work.len();
    let batches = tasks(work);
    let mut storage = MemoryStorage::<Record>::new();
    let tally = Arc::new(Tally::new(n));
    let progress = Arc::new(Progress::default());
    for batch in batches {
        if let Err(e) = storage.push_all(&mut stream::iter(batch)).await {
            progress.fail(format!("push: {e}"));
            break;
        }
    }
    progress.pushed.store(true, Ordering::Release);
    drive!(
        storage,
        tally,
        progress,
        n,
        workers,
        Duration::from_millis(200),
        limit
    )
}

/// Pushes `batches` through `sink` (a clone of the worker's storage) while the worker runs.
fn produce<S, K>(mut sink: S, batches: Vec<Vec<Task<Record>>>, progress: Arc<Progress>, pg: bool)
where
    S: TaskSink<Record, K> + Send + 'static,
    S::Error: std::fmt::Display,
{
    tokio::spawn(async move {
        for batch in batches {
            let fallback = pg.then(|| batch.clone());
            if let Err(e) = sink.push_all(&mut stream::iter(batch)).await {
                let Some(one_by_one) = fallback else {
                    progress.fail(format!("push: {e}"));
                    return;
                };
                if !is_duplicate(&e.to_string()) {
                    progress.fail(format!("push: {e}"));
                    return;
                }
                for task in one_by_one {
                    if let Err(e) = sink.push_task(task).await {
                        if !is_duplicate(&e.to_string()) {
                            progress.fail(format!("push: {e}"));
                            return;
                        }
                    }
                }
            }
        }
        progress.pushed.store(true, Ordering::Release);
    });
}

/// Whether a push error is PostgreSQL refusing a repeated idempotency key.
fn is_duplicate(error: &str) -> bool {
    error.contains("duplicate key") || error.contains("idx_jobs_idempotency_key")
}

/// `SqliteStorage` on a fresh file: the pool and `SqliteStorage::setup` as its README shows
/// them (setup turns WAL on), with `synchronous = NORMAL` on every connection — qupid's
/// default durability (setup's own `PRAGMA synchronous = OFF` reaches only the one pooled
/// connection that runs it).
async fn sqlite(
    work: Vec<(String, u64)>,
    workers: usize,
    limit: Duration,
) -> Result<Outcome, String> {
    let n = work.len();
    let batches = tasks(work);
    let dir = TempDir::new()?;
    let options = SqliteConnectOptions::new()
        .filename(dir.file("apalis.db"))
        .create_if_missing(true)
        .pragma("journal_mode", "WAL")
        .pragma("synchronous", "NORMAL");
    let pool = SqlitePoolOptions::new()
        .connect_with(options)
        .await
        .map_err(|e| format!("sqlite pool: {e}"))?;
    SqliteStorage::setup(&pool)
        .await
        .map_err(|e| format!("apalis sqlite setup: {e}"))?;
    let config = apalis_sqlite::Config::default()
        .queue(fresh_name("peers"))
        .batch_size(FETCH_BATCH);
    let storage = SqliteStorage::<Record>::new(&pool).with_config(config);
    let tally = Arc::new(Tally::new(n));
    let progress = Arc::new(Progress::default());
    produce(storage.clone(), batches, progress.clone(), false);
    let outcome = drive!(
        storage.poll_with_interval(POLL),
        tally,
        progress,
        n,
        workers,
        POLL * 5,
        limit
    );
    pool.close().await;
    drop(dir);
    Ok(outcome)
}

/// `RedisStorage` on a fresh queue (its keys are `QUEUE:*`), deleted after. With `ttl`, the
/// idempotency keys expire after a day; without, they take apalis's default, `None`, which
/// its docs call "do not expire" but which its push script turns into `EXPIRE key 0`, so
/// they are deleted as soon as they are set and nothing is de-duplicated.
async fn redis(
    work: Vec<(String, u64)>,
    ttl: bool,
    workers: usize,
    limit: Duration,
) -> Result<Outcome, String> {
    let n = work.len();
    let batches = tasks(work);
    let conn = apalis_redis::connect(redis_url())
        .await
        .map_err(|e| format!("cannot connect to redis: {e}"))?;
    let queue = fresh_name("peers");
    let config = apalis_redis::Config::default()
        .queue(&queue)
        .batch_size(FETCH_BATCH)
        .idempotency_ttl(ttl.then(|| Duration::from_secs(86_400)));
    let storage = RedisStorage::<Record, _>::new(conn).with_config(config);
    let tally = Arc::new(Tally::new(n));
    let progress = Arc::new(Progress::default());
    produce(storage.clone(), batches, progress.clone(), false);
    let outcome = drive!(
        storage.poll_with_interval(POLL),
        tally,
        progress,
        n,
        workers,
        POLL * 5,
        limit
    );
    redis_delete(&format!("{queue}:*")).await?;
    Ok(outcome)
}

/// `PostgresStorage` in a fresh database (its migrations create schema `apalis` and record
/// themselves in `public._sqlx_migrations`, so a schema alone would not be fresh), dropped
/// after.
async fn postgres(
    work: Vec<(String, u64)>,
    workers: usize,
    limit: Duration,
) -> Result<Outcome, String> {
    let n = work.len();
    let batches = tasks(work);
    let db = fresh_name("qupid_peers");
    postgres_exec(&postgres_url(), &format!("CREATE DATABASE {db}")).await?;
    let result = async {
        let pool = apalis_postgres::PgPool::connect(&postgres_url_for(&db))
            .await
            .map_err(|e| format!("postgres pool: {e}"))?;
        PostgresStorage::setup(&pool)
            .await
            .map_err(|e| format!("apalis postgres setup: {e}"))?;
        let config = apalis_postgres::Config::default()
            .queue(fresh_name("peers"))
            .batch_size(FETCH_BATCH);
        let storage = PostgresStorage::<Record>::new(&pool).with_config(config);
        let tally = Arc::new(Tally::new(n));
        let progress = Arc::new(Progress::default());
        produce(storage.clone(), batches, progress.clone(), true);
        let outcome = drive!(
            storage.with_pubsub().poll_with_interval(POLL),
            tally,
            progress,
            n,
            workers,
            POLL * 5,
            limit
        );
        pool.close().await;
        Ok(outcome)
    }
    .await;
    postgres_exec(
        &postgres_url(),
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    )
    .await?;
    result
}
