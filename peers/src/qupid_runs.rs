//! qupid's `Pipeline` on each ledger.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use qupid::ledger::{Claim, Offered, PostgresLedger, RedisLedger, SqliteLedger};
use qupid::{Entry, Key, Ledger, LedgerAdmin, MemoryLedger, Offer, Pipeline, Policy, Source};

use crate::servers::{fresh_name, postgres_exec, postgres_url, redis_delete, redis_url, TempDir};
use crate::tally::{Outcome, Tally};
use crate::Store;

/// One run of `work` through a qupid pipeline on `store`, after `retained` completed keys
/// were put in the ledger. The clock runs from building the pipeline (the ledger is open, the
/// entries made) to the end of `run()`: the pipeline stops by itself when its stream source
/// is finished and every accepted key has ended.
pub async fn run(
    store: Store,
    work: Vec<(String, u64)>,
    workers: usize,
    retained: usize,
    limit: Duration,
) -> Result<Outcome, String> {
    match store {
        Store::Memory => {
            let ledger = MemoryLedger::new();
            prefill(&ledger, retained).await?;
            Ok(pipeline(ledger, work, workers, limit).await)
        }
        Store::Sqlite => {
            let dir = TempDir::new()?;
            let ledger = SqliteLedger::open(dir.file("ledger.db"))
                .await
                .map_err(|e| format!("cannot open a SqliteLedger: {e}"))?;
            prefill(&ledger, retained).await?;
            let outcome = pipeline(ledger, work, workers, limit).await;
            drop(dir);
            Ok(outcome)
        }
        Store::Redis => {
            let ns = fresh_name("peers");
            let ledger = RedisLedger::open(&redis_url(), &ns)
                .await
                .map_err(|e| format!("cannot open a RedisLedger: {e}"))?;
            prefill(&ledger, retained).await?;
            let outcome = pipeline(ledger, work, workers, limit).await;
            redis_delete(&format!("qupid:{{{ns}}}:*")).await?;
            Ok(outcome)
        }
        Store::Postgres => {
            let ns = fresh_name("peers");
            let ledger = PostgresLedger::open(&postgres_url(), &ns)
                .await
                .map_err(|e| format!("cannot open a PostgresLedger: {e}"))?;
            let schema = ledger.schema();
            prefill(&ledger, retained).await?;
            let outcome = pipeline(ledger, work, workers, limit).await;
            postgres_exec(&postgres_url(), &format!("DROP SCHEMA {schema} CASCADE")).await?;
            Ok(outcome)
        }
    }
}

/// `Source::stream` of the entries, no-op `process` (which counts) and `save`,
/// `.concurrency(workers)`, everything else qupid's defaults.
async fn pipeline<L: LedgerAdmin>(
    ledger: L,
    work: Vec<(String, u64)>,
    workers: usize,
    limit: Duration,
) -> Outcome {
    let n = work.len();
    let entries: Vec<Entry<u64>> = work
        .into_iter()
        .map(|(k, i)| Entry::new(k, i).expect("valid key"))
        .collect();
    let tally = Arc::new(Tally::new(n));
    let counting = tally.clone();
    let built = Pipeline::builder(ledger)
        .source(Source::stream(futures::stream::iter(entries)))
        .process(move |a| {
            counting.hit(*a.payload());
            async { Ok::<_, Infallible>(()) }
        })
        .save(|_, ()| async { Ok::<_, Infallible>(()) })
        .concurrency(workers)
        .build();
    let pipeline = match built {
        Ok(p) => p,
        Err(e) => return tally.outcome(n, tally.elapsed(), Some(format!("build: {e}"))),
    };
    let stop = pipeline.shutdown_token();
    match tokio::time::timeout(limit, pipeline.run()).await {
        Ok(Ok(_report)) => tally.outcome(n, tally.elapsed(), None),
        Ok(Err(e)) => tally.outcome(n, tally.elapsed(), Some(format!("run: {e}"))),
        Err(_) => {
            stop.cancel();
            let (seen, all) = tally.seen();
            let why = format!(
                "timed out after {} s with {seen} of {all} keys processed",
                limit.as_secs()
            );
            tally.outcome(n, limit, Some(why))
        }
    }
}

/// Puts `n` completed keys (`old/{i:08}`, never offered by the workload) in the ledger,
/// 1,024 at a time: offer, start, complete.
async fn prefill<L: Ledger>(ledger: &L, n: usize) -> Result<(), String> {
    let policy = Policy::default();
    let mut batch = Vec::with_capacity(1024);
    for start in (0..n).step_by(1024) {
        batch.clear();
        for i in start..(start + 1024).min(n) {
            batch.push(Offer::new(Key::new(format!("old/{i:08}")).expect("valid")));
        }
        let offered = ledger
            .offer(&policy, &batch)
            .await
            .map_err(|e| format!("prefill offer: {e}"))?;
        let claims: Vec<Claim> = batch
            .iter()
            .zip(offered)
            .filter_map(|(o, r)| match r {
                Offered::Accepted(lease) => Some(Claim {
                    key: o.key.clone(),
                    token: lease.token,
                }),
                _ => None,
            })
            .collect();
        ledger
            .start(&policy, &claims)
            .await
            .map_err(|e| format!("prefill start: {e}"))?;
        ledger
            .complete(&claims)
            .await
            .map_err(|e| format!("prefill complete: {e}"))?;
    }
    Ok(())
}
