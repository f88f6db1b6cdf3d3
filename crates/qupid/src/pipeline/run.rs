//! Running a pipeline: start the source and worker tasks, wait for a reason to stop, then
//! stop in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::polling::{Idle, Invalid, Polling};
use super::worker::Worker;
use super::{signals, Pipeline, Report};
use crate::error::{Error, ErrorKind, Result};
use crate::ledger::LedgerAdmin;
use crate::observe::Counters;
use crate::queue::Queue;

pub(super) async fn run<L: LedgerAdmin, T: Send + Sync + 'static>(
    p: Pipeline<L, T>,
) -> Result<Report> {
    let started = tokio::time::Instant::now();
    let Pipeline {
        builder: b,
        work,
        counters,
        own,
    } = p;
    let queue: Queue<L, T> = Queue::builder(b.ledger)
        .capacity(b.buffer.unwrap_or(b.concurrency.saturating_mul(4)).max(1))
        .policy(b.policy.clone())
        .name(b.name.clone())
        .counters(counters.clone())
        .start_on_publish(true)
        .build()?;
    let stop = b.shutdown.clone();
    let hard = CancellationToken::new();
    let draining = CancellationToken::new();
    let signals = b
        .signals
        .map(|which| signals::listen(which, stop.clone(), hard.clone()));
    let purger = (!b.policy.retention.is_forever()).then(|| {
        let (queue, stop) = (queue.clone(), stop.clone());
        tokio::spawn(purge(queue, stop))
    });

    let idle = Arc::new(Idle::new(b.sources.len(), b.until));
    let invalid = Arc::new(Invalid::new(own.clone()));
    let polling = stop.child_token();
    let mut sources = JoinSet::new();
    for (i, source) in b.sources.into_iter().enumerate() {
        let task = Polling {
            queue: queue.clone(),
            idle: idle.clone(),
            invalid: invalid.clone(),
            counters: own.clone(),
            stop: polling.clone(),
        };
        sources.spawn(task.run(i, source));
    }
    let mut workers = JoinSet::new();
    for _ in 0..b.concurrency {
        let w = Worker {
            sub: queue.subscribe(),
            work: work.clone(),
            timeout: b.timeout,
            backoff: b.backoff,
            draining: draining.clone(),
            hard: hard.clone(),
            idle: idle.clone(),
            counters: own.clone(),
        };
        workers.spawn(w.run());
    }

    let span = tracing::info_span!("qupid.pipeline", pipeline = %b.name);
    let failure = wait_for_stop(&queue, &idle, &counters, &stop, b.give_up_after)
        .instrument(span)
        .await;

    // Stop polling and accepting; release what never started.
    polling.cancel();
    while sources.join_next().await.is_some() {}
    queue.close();
    let released = queue.release_buffered();
    tracing::debug!(released, "released buffered keys");
    if failure.is_some() {
        // The ledger cannot record endings: cancel running attempts at once and release
        // their keys where the ledger still takes it.
        hard.cancel();
    }
    // Let running attempts finish, up to the drain timeout; then cancel and release them.
    draining.cancel();
    let drained = tokio::time::timeout(b.drain, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(timeout = ?b.drain, "drain timed out: cancelling running attempts");
        hard.cancel();
        while workers.join_next().await.is_some() {}
    }
    if let Some(t) = signals {
        t.abort();
    }
    if let Some(t) = purger {
        t.abort();
    }
    queue.shutdown().await;
    let report = Report::new(counters.counts(), &own, started.elapsed());
    match failure {
        Some(e) => {
            tracing::debug!(error = %e, ?report, "the pipeline stopped on a ledger failure");
            Err(e)
        }
        None => Ok(report),
    }
}

/// Waits for a reason to stop: the stop token, nothing left to do (as the pipeline's
/// [`Until`](super::builder::Until) says), or a ledger failure that ends the run, which it
/// answers. Logs an outage that lasts longer than a lease once, and its end.
async fn wait_for_stop<L: LedgerAdmin, T: Send + Sync + 'static>(
    queue: &Queue<L, T>,
    idle: &Idle,
    counters: &Counters,
    stop: &CancellationToken,
    give_up_after: Option<Duration>,
) -> Option<Error> {
    let lease = queue.policy().lease;
    let mut outage_logged = false;
    let failed = counters.ledger_failed();
    tokio::pin!(failed);
    loop {
        let notified = idle.changed.notified();
        if let Some(e) = counters.ledger_failure() {
            return Some(e);
        }
        if idle.all() && queue.held() == 0 {
            tracing::debug!("nothing left to do: stopping");
            return None;
        }
        match counters.ledger_outage() {
            Some((down, last)) => {
                if let Some(limit) = give_up_after.filter(|limit| down >= *limit) {
                    return Some(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "the ledger stayed unavailable for {down:.0?}, past the \
                             give_up_after limit of {limit:?}: {last}"
                        ),
                    ));
                }
                if down >= lease && !outage_logged {
                    outage_logged = true;
                    tracing::error!(
                        down_for = ?down,
                        error = %last,
                        "the ledger has been unavailable for longer than a lease: keys held \
                         here may be taken over by other instances; still retrying"
                    );
                }
            }
            None if outage_logged => {
                outage_logged = false;
                tracing::info!("the ledger answers again");
            }
            None => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = notified => {}
            e = &mut failed => return Some(e),
            // Jobs ending do not wake this loop (that would cost a wake-up per job); it looks
            // again every few milliseconds.
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// Purges by the policy's retention on its timer until the pipeline stops.
async fn purge<L: LedgerAdmin, T: Send + Sync + 'static>(
    queue: Queue<L, T>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(queue.policy().purge_every);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        match queue.purge().await {
            Ok(p) => {
                if p.completed + p.dead > 0 {
                    tracing::info!(completed = p.completed, dead = p.dead, "purged");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "purge failed");
            }
        }
    }
}
