//! Purge: how long `purge` takes to remove 1,000,000 finished keys by age, per ledger, and
//! what it does meanwhile to a trickle of writes beside it.
//!
//! Each ledger is filled with completed keys (the retained section's `fill`), then, after a
//! pause, a trickle runs for [`BASELINE`] with no purge: one fresh key at a time, offered and
//! started in one call, then completed, a key started at most every [`EVERY`] (the next one
//! at once if a key took longer); each key's latency is from the offer to the completion's
//! answer. Then the same trickle runs beside a `purge` of every key finished before the
//! pause (`Keep::younger_than` the time since then, less half the pause). The first
//! trickle's keys are removed before the purge and the second's finish after its cutoff, so
//! the purge removes the filled keys and only them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qupid::ledger::{Claim, PostgresLedger, RedisLedger, SqliteLedger};
use qupid::{Keep, Key, Ledger, LedgerAdmin, MemoryLedger, Offer, Policy, Retention};
use tokio::time::MissedTickBehavior;

use crate::retained::fill;
use crate::workload::{fresh_name, runtime};
use crate::{postgres, redis, sqlite};

/// The trickle starts a key at most this often.
const EVERY: Duration = Duration::from_millis(1);

/// How long the trickle runs with no purge beside it. Also, with the pause, the age of the
/// purge's cutoff: long enough that the cutoff stays before the purge's start even on Redis,
/// whose purge reads the clock again for each chunk (a purge taking longer than this would
/// also remove keys of the second trickle, and say so in its count).
const BASELINE: Duration = Duration::from_secs(10);

/// The pause between the last filled key and the first key of the trickle: the purge's
/// cutoff is in its middle.
const PAUSE: Duration = Duration::from_millis(400);

/// The latencies of one trickle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trickle {
    /// Keys offered and completed.
    pub(crate) keys: usize,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    /// The longest time between the ends of two keys in a row (or from the trickle's start to
    /// its first key's end, or from its last key's end to its stop): what a caller waited, its
    /// own code between two calls included.
    pub(crate) gap: Duration,
}

impl Trickle {
    fn of(mut all: Vec<Duration>, gap: Duration) -> Trickle {
        all.sort_unstable();
        let at = |q: f64| {
            let last = all.len().saturating_sub(1);
            all.get((last as f64 * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        Trickle {
            keys: all.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
            gap,
        }
    }
}

/// One ledger's figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measured {
    /// Keys filled, and keys the purge removed.
    pub(crate) filled: usize,
    pub(crate) removed: u64,
    /// The purge's wall time.
    pub(crate) purge: Duration,
    /// The trickle beside the purge, and with no purge.
    pub(crate) during: Trickle,
    pub(crate) without: Trickle,
}

/// One ledger's row, or why it was skipped.
pub(crate) struct Row {
    pub(crate) ledger: &'static str,
    pub(crate) result: Result<Measured, String>,
}

/// Offers and completes fresh keys `{tag}/…` one at a time until `stop`: each one's time
/// from the offer to the completion's answer, and the longest gap between two ends.
async fn trickle<L: Ledger>(l: L, tag: String, stop: Arc<AtomicBool>) -> Result<Trickle, String> {
    let policy = Policy::default();
    let mut out = Vec::new();
    let mut i = 0u64;
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut last, mut gap) = (Instant::now(), Duration::ZERO);
    loop {
        ticks.tick().await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = Key::new(format!("{tag}/{i:09}")).expect("a valid key");
        i += 1;
        let start = Instant::now();
        let offered = l
            .offer_and_start(&policy, &[Offer::new(key.clone())])
            .await
            .map_err(|e| format!("trickle offer: {e}"))?;
        let lease = offered[0]
            .lease()
            .ok_or_else(|| format!("trickle key {key:?} not accepted: {:?}", offered[0]))?;
        let done = l
            .complete(&[Claim {
                key,
                token: lease.token,
            }])
            .await
            .map_err(|e| format!("trickle complete: {e}"))?;
        if let Some(Err(refused)) = done.first() {
            return Err(format!("trickle completion refused: {refused:?}"));
        }
        out.push(start.elapsed());
        let now = Instant::now();
        gap = gap.max(now - last);
        last = now;
    }
    Ok(Trickle::of(out, gap.max(last.elapsed())))
}

/// Runs a trickle tagged `tag` beside `during`, stopping it once `during` is done: its
/// latencies and what `during` answered.
async fn beside<L, T, F>(l: &L, tag: &str, during: F) -> Result<(Trickle, T), String>
where
    L: Ledger + Clone,
    F: std::future::Future<Output = Result<T, String>>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(trickle(l.clone(), tag.to_owned(), stop.clone()));
    let out = during.await;
    stop.store(true, Ordering::Relaxed);
    let trickle = task.await.map_err(|e| format!("trickle task: {e}"))??;
    Ok((trickle, out?))
}

/// Fills `l` with `n` completed keys, measures the trickle alone, then beside the purge.
async fn measure<L: LedgerAdmin + Clone>(l: L, n: usize) -> Result<Measured, String> {
    fill(&l, 0, n).await?;
    let filled = Instant::now();
    tokio::time::sleep(PAUSE).await;
    let (without, ()) = beside(&l, "alone", async {
        tokio::time::sleep(BASELINE).await;
        Ok(())
    })
    .await?;
    // The trickle's keys go, so that the purge removes the filled keys only (on Redis, whose
    // purge reads the clock again for each chunk, they could otherwise become old enough).
    let alone: Vec<Key> = (0..without.keys)
        .map(|i| Key::new(format!("alone/{i:09}")).expect("a valid key"))
        .collect();
    for keys in alone.chunks(1000) {
        l.remove(keys, false)
            .await
            .map_err(|e| format!("removing the trickle's keys: {e}"))?;
    }
    // Every key finished before the middle of the pause, none of the trickle's.
    let age = filled.elapsed().saturating_sub(PAUSE / 2);
    let retention = Retention {
        completed: Keep::younger_than(age),
        dead: Keep::FOREVER,
    };
    let (during, (purged, took)) = beside(&l, "during", async {
        let start = Instant::now();
        let purged = l
            .purge(&retention)
            .await
            .map_err(|e| format!("purge: {e}"))?;
        Ok((purged, start.elapsed()))
    })
    .await?;
    Ok(Measured {
        filled: n,
        removed: purged.completed,
        purge: took,
        during,
        without,
    })
}

/// Every ledger, each filled with `n` keys to purge.
pub(crate) fn run(n: usize) -> Vec<Row> {
    let rt = runtime();
    let mut rows = Vec::new();
    rows.push(Row {
        ledger: "memory",
        result: rt.block_on(measure(MemoryLedger::new(), n)),
    });
    rows.push(Row {
        ledger: "sqlite",
        result: (|| {
            let dir = sqlite::TempDir::new()?;
            let file = dir.file();
            rt.block_on(async {
                let ledger = SqliteLedger::open(&file)
                    .await
                    .map_err(|e| format!("cannot open a SqliteLedger: {e}"))?;
                measure(ledger, n).await
            })
        })(),
    });
    let url = redis::url();
    rows.push(Row {
        ledger: "redis",
        result: rt.block_on(async {
            let mut conn = redis::connect(&url).await?;
            let ns = fresh_name("purge");
            let ledger = RedisLedger::open(&url, &ns)
                .await
                .map_err(|e| format!("cannot open a RedisLedger: {e}"))?;
            let out = measure(ledger, n).await;
            redis::delete_matching(&mut conn, &format!("qupid:{{{ns}}}:*"))
                .await
                .map_err(|e| format!("deleting namespace {ns}: {e}"))?;
            out
        }),
    });
    let url = postgres::url();
    rows.push(Row {
        ledger: "postgres",
        result: rt.block_on(async {
            let client = postgres::connect(&url).await?;
            let ledger = PostgresLedger::open(&url, &fresh_name("purge"))
                .await
                .map_err(|e| format!("cannot open a PostgresLedger: {e}"))?;
            let schema = ledger.schema();
            let out = measure(ledger, n).await;
            postgres::drop_schema(&client, &schema).await?;
            out
        }),
    });
    rows
}
