//! Latency: how long an entry takes from the moment the pipeline's source hands it over to
//! the end of its save, per ledger, at a trickle (100 entries a second) and under load (a
//! stream as fast as the pipeline takes it). The ledger's record of the completion follows
//! the save (the queue batches it without waiting), so it is not in the figure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qupid::ledger::{PostgresLedger, RedisLedger, SqliteLedger};
use qupid::{Entry, LedgerAdmin, MemoryLedger, Pipeline, Source};

use crate::workload::{fresh_name, runtime, CONCURRENCY};
use crate::{postgres, redis, sqlite};

/// The percentiles of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latencies {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    /// Entries per second over the run.
    pub(crate) rate: f64,
}

/// One ledger's row: at a trickle and under load, or why it was skipped.
pub(crate) struct Row {
    pub(crate) ledger: &'static str,
    pub(crate) result: Result<(Latencies, Latencies), String>,
}

/// The pause between two entries of the trickle: 100 a second.
const TRICKLE_EVERY: Duration = Duration::from_millis(10);

/// Runs `n` entries through a pipeline over `ledger`, each stamped when the source yields
/// it, one every `every` (or as fast as taken, with `None`), and answers the percentiles of
/// stamp-to-saved.
async fn measure<L: LedgerAdmin>(ledger: L, n: usize, every: Option<Duration>) -> Latencies {
    let seen: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let ticks = every.map(tokio::time::interval);
    let entries = futures::stream::unfold((0, ticks), move |(i, mut ticks)| async move {
        if i == n {
            return None;
        }
        if let Some(t) = ticks.as_mut() {
            t.tick().await;
        }
        let entry = Entry::new(format!("lat/{i:08}"), Instant::now()).expect("a valid key");
        Some((entry, (i + 1, ticks)))
    });
    let saved = seen.clone();
    let start = Instant::now();
    let report = Pipeline::builder(ledger)
        .source(Source::stream(Box::pin(entries)))
        .process(|a| {
            let stamp = *a.payload();
            async move { Ok::<_, std::convert::Infallible>(stamp) }
        })
        .save(move |_, stamp: Instant| {
            let saved = saved.clone();
            async move {
                saved
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(stamp.elapsed());
                Ok::<_, std::convert::Infallible>(())
            }
        })
        .concurrency(CONCURRENCY)
        .build()
        .expect("pipeline")
        .run()
        .await
        .expect("run");
    let elapsed = start.elapsed();
    assert_eq!(
        report.completed, n as u64,
        "every entry saved once: {report:?}"
    );
    let mut all = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    all.sort_unstable();
    let at = |q: f64| {
        let last = all.len().saturating_sub(1);
        all.get((last as f64 * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Latencies {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
        rate: n as f64 / elapsed.as_secs_f64(),
    }
}

/// Both runs (trickle, load) on fresh ledgers from `open`.
async fn both<L, F, Fut>(
    open: F,
    trickle: usize,
    load: usize,
) -> Result<(Latencies, Latencies), String>
where
    L: LedgerAdmin,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<L, String>>,
{
    let slow = measure(open().await?, trickle, Some(TRICKLE_EVERY)).await;
    let fast = measure(open().await?, load, None).await;
    Ok((slow, fast))
}

/// Every ledger: `trickle` entries at 100 a second, then `load` as fast as taken.
pub(crate) fn run(trickle: usize, load: usize) -> Vec<Row> {
    let rt = runtime();
    let mut rows = Vec::new();
    rows.push(Row {
        ledger: "memory",
        result: rt.block_on(both(|| async { Ok(MemoryLedger::new()) }, trickle, load)),
    });
    rows.push(Row {
        ledger: "sqlite",
        result: (|| {
            let dirs = [sqlite::TempDir::new()?, sqlite::TempDir::new()?];
            let next = std::sync::atomic::AtomicUsize::new(0);
            rt.block_on(both(
                || {
                    let file = dirs[next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)].file();
                    async move {
                        SqliteLedger::open(&file)
                            .await
                            .map_err(|e| format!("cannot open a SqliteLedger: {e}"))
                    }
                },
                trickle,
                load,
            ))
        })(),
    });
    let url = redis::url();
    rows.push(Row {
        ledger: "redis",
        result: rt.block_on(async {
            let mut conn = redis::connect(&url).await?;
            let out = both(
                || async {
                    RedisLedger::open(&url, &fresh_name("latency"))
                        .await
                        .map_err(|e| format!("cannot open a RedisLedger: {e}"))
                },
                trickle,
                load,
            )
            .await;
            let mine = format!("qupid:{{latency_{}_*", std::process::id());
            redis::delete_matching(&mut conn, &mine)
                .await
                .map_err(|e| format!("deleting the namespaces: {e}"))?;
            out
        }),
    });
    let url = postgres::url();
    rows.push(Row {
        ledger: "postgres",
        result: rt.block_on(async {
            let client = postgres::connect(&url).await?;
            let schemas = Arc::new(Mutex::new(Vec::new()));
            let out = both(
                || {
                    let schemas = schemas.clone();
                    let url = url.clone();
                    async move {
                        let ledger = PostgresLedger::open(&url, &fresh_name("latency"))
                            .await
                            .map_err(|e| format!("cannot open a PostgresLedger: {e}"))?;
                        schemas
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(ledger.schema());
                        Ok(ledger)
                    }
                },
                trickle,
                load,
            )
            .await;
            let schemas = std::mem::take(&mut *schemas.lock().unwrap_or_else(|p| p.into_inner()));
            for schema in schemas {
                postgres::drop_schema(&client, &schema).await?;
            }
            out
        }),
    });
    rows
}
