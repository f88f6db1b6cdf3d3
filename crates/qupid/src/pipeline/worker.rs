//! The workers: each takes jobs from the queue and runs attempts on them until they end.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::polling::Idle;
use super::report::PipelineCounters;
use super::{Attempt, Backoff, StepError, WorkFn};
use crate::queue::{FailOutcome, Job, Subscriber};

pub(super) struct Worker<T> {
    pub(super) sub: Subscriber<T>,
    pub(super) work: Arc<WorkFn<T>>,
    pub(super) timeout: Option<Duration>,
    pub(super) backoff: Backoff,
    pub(super) draining: CancellationToken,
    pub(super) hard: CancellationToken,
    pub(super) idle: Arc<Idle>,
    pub(super) counters: Arc<PipelineCounters>,
}

impl<T: Send + Sync + 'static> Worker<T> {
    pub(super) async fn run(self) {
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
            let attempt = Attempt::of(&job);
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
                Some(Ok(Err(StepError::Expired))) => {
                    tracing::warn!(
                        "the lease ran out before the save (this process was paused, or could \
                         not renew): abandoning the attempt"
                    );
                    self.counters.lease_expired.add(1);
                    release(job).await;
                    return;
                }
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

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
