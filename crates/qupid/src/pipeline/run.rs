//! Running a pipeline: source tasks, worker tasks, and the stop sequence.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::source::{Item, Kind};
use super::{Attempt, Backoff, Pipeline, Report, Source, WorkFn};
use crate::error::Result;
use crate::ledger::Ledger;
use crate::observe::Counters;
use crate::queue::{FailOutcome, Job, Queue, Subscriber};

/// What the stop logic needs to know about sources and jobs.
struct Idle {
    /// Bumped whenever a job ends, so a poll can tell whether anything ended meanwhile.
    ended: AtomicU64,
    /// Per source: its last poll accepted nothing while nothing was in flight.
    quiet: Vec<AtomicBool>,
    /// Per source: finished (a stream that ended).
    finished: Vec<AtomicBool>,
    changed: Notify,
}

impl Idle {
    fn all(&self, until_idle: bool) -> bool {
        self.quiet
            .iter()
            .zip(&self.finished)
            .all(|(q, f)| f.load(Ordering::SeqCst) || (until_idle && q.load(Ordering::SeqCst)))
    }
}

pub(super) async fn run<L: Ledger, T: Send + Sync + 'static>(p: Pipeline<L, T>) -> Result<Report> {
    let started = tokio::time::Instant::now();
    let Pipeline {
        builder: b,
        work,
        counters,
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
    let ctrl_c = b.ctrl_c.then(|| {
        let (stop, hard) = (stop.clone(), hard.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("ctrl-c: stopping (press again to skip the drain)");
                stop.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    hard.cancel();
                }
            }
        })
    });
    let purger = (!b.policy.retention.is_forever()).then(|| {
        let (queue, stop) = (queue.clone(), stop.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(queue.policy().purge_every);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.cancelled() => return,
                }
                match queue.ledger().purge(&queue.policy().retention).await {
                    Ok(p) if p.completed + p.dead > 0 => {
                        tracing::info!(completed = p.completed, dead = p.dead, "purged");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
            }
        })
    });

    let n = b.sources.len();
    let idle = Arc::new(Idle {
        ended: AtomicU64::new(0),
        quiet: (0..n).map(|_| AtomicBool::new(false)).collect(),
        finished: (0..n).map(|_| AtomicBool::new(false)).collect(),
        changed: Notify::new(),
    });
    let invalid = Arc::new(Invalid::new(counters.clone()));
    let polling = stop.child_token();
    let mut sources = JoinSet::new();
    for (i, source) in b.sources.into_iter().enumerate() {
        sources.spawn(poll_source(
            i,
            source,
            queue.clone(),
            idle.clone(),
            invalid.clone(),
            polling.clone(),
        ));
    }
    let mut workers = JoinSet::new();
    let backoff = b.backoff;
    for _ in 0..b.concurrency {
        let w = Worker {
            sub: queue.subscribe(),
            work: work.clone(),
            timeout: b.timeout,
            backoff,
            draining: draining.clone(),
            hard: hard.clone(),
            idle: idle.clone(),
        };
        workers.spawn(w.run());
    }

    // Wait for a stop, or for nothing left to do.
    loop {
        let notified = idle.changed.notified();
        if idle.all(b.until_idle) && queue.held() == 0 {
            tracing::debug!("nothing left to do: stopping");
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = notified => {}
            // Jobs ending do not wake this loop (that would cost a wake-up per job); it looks
            // again every few milliseconds.
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }

    // Stop polling and accepting; release what never started.
    polling.cancel();
    while sources.join_next().await.is_some() {}
    queue.close();
    let released = queue.release_buffered();
    tracing::debug!(released, "released buffered keys");
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
    if let Some(t) = ctrl_c {
        t.abort();
    }
    if let Some(t) = purger {
        t.abort();
    }
    queue.shutdown().await;
    Ok(Report::from_counters(&counters, started.elapsed()))
}

async fn poll_source<L: Ledger, T: Send + Sync + 'static>(
    i: usize,
    source: Source<T>,
    queue: Queue<L, T>,
    idle: Arc<Idle>,
    invalid: Arc<Invalid>,
    stop: CancellationToken,
) {
    let name = source.name;
    match source.kind {
        Kind::Poll { every, mut poll } => {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let ended_before = idle.ended.load(Ordering::SeqCst);
                let span = tracing::info_span!("qupid.poll", source = %name, entries = tracing::field::Empty, accepted = tracing::field::Empty);
                let polled = AssertUnwindSafe(poll())
                    .catch_unwind()
                    .instrument(span.clone());
                let batch = tokio::select! {
                    b = polled => b,
                    _ = stop.cancelled() => return,
                };
                let accepted = match batch {
                    Ok(Ok(items)) => {
                        span.record("entries", items.len());
                        let entries = invalid.skip(items, &span);
                        publish(&queue, entries, &stop)
                            .instrument(span.clone())
                            .await
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(parent: &span, error = %e, "poll failed");
                        queue_counters_poll_error(&queue);
                        None
                    }
                    Err(panic) => {
                        tracing::error!(parent: &span, panic = %panic_message(&*panic), "poll panicked");
                        queue_counters_poll_error(&queue);
                        None
                    }
                };
                span.record("accepted", accepted.unwrap_or(0));
                let quiet = accepted == Some(0)
                    && queue.held() == 0
                    && idle.ended.load(Ordering::SeqCst) == ended_before;
                idle.quiet[i].store(quiet, Ordering::SeqCst);
                idle.changed.notify_one();
            }
        }
        Kind::Stream(stream) => {
            let mut chunks = stream.ready_chunks(256);
            loop {
                let next = tokio::select! {
                    n = chunks.next() => n,
                    _ = stop.cancelled() => return,
                };
                let Some(items) = next else { break };
                let entries = invalid.skip(items, &tracing::Span::current());
                if publish(&queue, entries, &stop).await.is_none() && stop.is_cancelled() {
                    return;
                }
            }
            idle.finished[i].store(true, Ordering::SeqCst);
            idle.changed.notify_one();
        }
    }
}

/// Entries the sources handed over as errors: skipped, counted, and logged once per
/// distinct error (a source polled every second would otherwise log the same bad row every
/// second).
struct Invalid {
    counters: Arc<Counters>,
    seen: Mutex<HashSet<String>>,
}

impl Invalid {
    /// Distinct errors remembered; past it, the memory starts over (and logs them again).
    const REMEMBERED: usize = 4096;

    fn new(counters: Arc<Counters>) -> Self {
        Invalid {
            counters,
            seen: Mutex::default(),
        }
    }

    /// The entries of `items`; the errors are counted and logged (under `span`).
    fn skip<T>(&self, items: Vec<Item<T>>, span: &tracing::Span) -> Vec<crate::Entry<T>> {
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Ok(entry) => entries.push(entry),
                Err(e) => {
                    self.counters.invalid.add(1);
                    let message = e.to_string();
                    let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                    if seen.len() >= Self::REMEMBERED {
                        seen.clear();
                    }
                    if seen.insert(message) {
                        tracing::warn!(parent: span, error = %e, "skipped an invalid entry");
                    } else {
                        tracing::debug!(parent: span, error = %e, "skipped an invalid entry again");
                    }
                }
            }
        }
        entries
    }
}

fn queue_counters_poll_error<L: Ledger, T: Send + Sync + 'static>(queue: &Queue<L, T>) {
    queue.core_counters().poll_errors.add(1);
}

/// Publishes a batch; answers how many were accepted, or `None` if the pipeline is stopping
/// or the ledger refused for good (a poll source offers the entries again next time). While
/// the ledger fails transiently (unreachable, restarting), the same entries are offered again
/// after a growing pause, so a stream source loses nothing either.
async fn publish<L: Ledger, T: Send + Sync + 'static>(
    queue: &Queue<L, T>,
    mut entries: Vec<crate::Entry<T>>,
    stop: &CancellationToken,
) -> Option<usize> {
    let mut pause = Duration::from_millis(50);
    loop {
        let out = tokio::select! {
            o = queue.publish_batch(entries) => o,
            _ = stop.cancelled() => return None,
        };
        match out {
            Ok(out) => return Some(out.iter().filter(|p| !p.is_duplicate()).count()),
            Err(e) if e.error().is_transient() => {
                tracing::warn!(error = %e.error(), retry_in = ?pause, "offering a batch failed; trying again");
                entries = e.into_entries();
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return None,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::warn!(error = %e, "offering a batch failed; it will be polled again");
                return None;
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

struct Worker<T> {
    sub: Subscriber<T>,
    work: Arc<WorkFn<T>>,
    timeout: Option<Duration>,
    backoff: Backoff,
    draining: CancellationToken,
    hard: CancellationToken,
    idle: Arc<Idle>,
}

impl<T: Send + Sync + 'static> Worker<T> {
    async fn run(self) {
        loop {
            let job = tokio::select! {
                biased;
                j = self.sub.recv() => j,
                _ = self.hard.cancelled() => None,
            };
            let Some(job) = job else { return };
            let span = tracing::debug_span!("qupid.job", key = %job.key(), token = %job.token());
            self.attempt_until_done(job).instrument(span).await;
            // The stop loop looks at this on its own schedule: waking it per job is costly.
            self.idle.ended.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Runs attempts on `job` until it completes, goes Dead, loses its lease, or is stopped.
    async fn attempt_until_done(&self, mut job: Job<T>) {
        loop {
            let lost = job.lease_lost().clone();
            let attempt = Attempt {
                entry: job.shared_entry(),
                token: job.token(),
                number: job.attempt(),
                lost: lost.clone(),
            };
            let work = AssertUnwindSafe((self.work)(attempt)).catch_unwind();
            let outcome = tokio::select! {
                // The work first: when it finishes at once, the cancellation futures are
                // never polled, so they never register a waiter.
                biased;
                r = with_timeout(self.timeout, work) => r,
                _ = lost.cancelled() => {
                    tracing::warn!("lease lost during the attempt: abandoning it");
                    return;
                }
                _ = self.hard.cancelled() => {
                    release(job).await;
                    return;
                }
            };
            let error = match outcome {
                Some(Ok(Ok(()))) => None,
                Some(Ok(Err(e))) => Some(e.to_string()),
                Some(Err(panic)) => Some(format!("panicked: {}", panic_message(&*panic))),
                None => Some(format!(
                    "timed out after {:?}",
                    self.timeout.unwrap_or_default()
                )),
            };
            let Some(error) = error else {
                // Sent to the batching task without waiting: the worker moves on, the task
                // counts the outcome, and a stop waits until every completion is recorded.
                job.complete_later();
                return;
            };
            match job.fail(&error).await {
                Ok(FailOutcome::Retry(j)) => {
                    job = j;
                    tracing::warn!(attempt = job.attempt(), %error, "attempt failed; retrying");
                    let wait = self.backoff.delay(job.attempt());
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.draining.cancelled() => {
                            release(job).await;
                            return;
                        }
                        _ = lost.cancelled() => return,
                    }
                    if let Err(e) = job.start().await {
                        tracing::warn!(error = %e, "could not start the next attempt");
                        return;
                    }
                }
                Ok(FailOutcome::Dead { attempts }) => {
                    tracing::error!(attempts, %error, "giving up: the key is dead");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not record the failure");
                    return;
                }
            }
        }
    }
}

async fn release<T>(job: Job<T>) {
    if let Err(e) = job.release().await {
        tracing::warn!(error = %e, "could not release the key; it will be offered again after its lease expires");
    }
}

async fn with_timeout<F: std::future::Future>(t: Option<Duration>, f: F) -> Option<F::Output> {
    match t {
        Some(t) => tokio::time::timeout(t, f).await.ok(),
        None => Some(f.await),
    }
}
