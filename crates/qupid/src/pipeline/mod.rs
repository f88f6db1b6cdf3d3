//! The pipeline: sources → process → save, de-duplicated — the high level.
//!
//! A pipeline polls its [`Source`]s, offers every entry to the ledger (one call per batch),
//! and runs `process` then `save` on each accepted entry, `concurrency` at a time. The key is
//! completed only after `save` succeeds. A failed attempt (an error, a panic, a timeout) is
//! retried after a [`Backoff`] until `policy.max_attempts`, then the key is Dead.
//!
//! An accepted key's first attempt starts in the same ledger call that accepted it
//! ([`Ledger::offer_and_start`](crate::Ledger::offer_and_start)): a key costs the ledger two writes (accept-and-start,
//! complete), and workers never wait for the ledger before working. So the entries waiting in
//! the pipeline's buffer (a few times `concurrency`) show as Running in the ledger, and a
//! stop releases them (their records are removed, so the next poll offers them afresh).
//!
//! # Stopping
//!
//! A stop — from a [`shutdown`](PipelineBuilder::shutdown) token, from SIGINT or SIGTERM with
//! [`stop_on_signals`](PipelineBuilder::stop_on_signals), or by itself with
//! [`stop_when_idle`](PipelineBuilder::stop_when_idle) (nothing left to do here) or
//! [`stop_when_drained`](PipelineBuilder::stop_when_drained) (everything the sources return is
//! finished in the ledger, wherever it was processed) — stops polling and accepting, releases
//! what never started, lets running attempts finish up to the drain timeout, then cancels and
//! releases the rest, and [`run`](Pipeline::run) returns the [`Report`]. Nothing is lost: a
//! released key is offered again by the next poll.
//!
//! # Failures
//!
//! - A source's item that is an error (an invalid key) is skipped, counted
//!   ([`Report::invalid`]) and logged once; the rest of its batch goes on.
//! - A failed poll, a failed attempt (an error, a panic, a timeout) and a transient ledger
//!   error (unreachable, restarting) are logged, counted and retried.
//! - A ledger error that retrying cannot fix (corrupt data, a newer schema, permission
//!   denied) stops the pipeline at once, and [`run`](Pipeline::run) returns it; so does an
//!   outage longer than [`give_up_after`](PipelineBuilder::give_up_after), if set.

mod attempt;
mod backoff;
mod builder;
mod polling;
mod report;
mod run;
mod signals;
mod source;
mod worker;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

pub use attempt::Attempt;
pub use backoff::Backoff;
pub use builder::{PipelineBuilder, ProcessStep};
pub use report::Report;
pub use source::{Source, SourceItem};

use crate::error::{BoxError, Result};
use crate::ledger::LedgerAdmin;
use crate::observe::Counters;
use report::PipelineCounters;

/// `process` then `save`, boxed once per attempt.
pub(crate) type WorkFn<T> =
    dyn Fn(Attempt<T>) -> BoxFuture<'static, Result<(), StepError>> + Send + Sync;

/// Which step failed, and why.
#[derive(Debug)]
pub(crate) enum StepError {
    Process(BoxError),
    Save(BoxError),
    /// The lease ran out (by this process's clock) before `save` began.
    Expired,
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Process(e) => write!(f, "process: {e}"),
            StepError::Save(e) => write!(f, "save: {e}"),
            StepError::Expired => f.write_str("the lease ran out before the save began"),
        }
    }
}

/// A de-duplicated poll → process → save pipeline. Build one with [`Pipeline::builder`].
///
/// ```
/// use std::time::Duration;
/// use qupid::{Entry, MemoryLedger, Pipeline, Source};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> qupid::Result<()> {
/// // The same three records show up in every poll until they are saved.
/// let source = Source::poll(Duration::from_millis(10), || async {
///     Ok::<_, std::io::Error>((1..=3).map(|i| Entry::new(format!("rec/{i}"), i)))
/// });
/// let report = Pipeline::builder(MemoryLedger::new())
///     .source(source)
///     .process(|a| async move { Ok::<_, std::io::Error>(a.payload() * 10) })
///     .save(|_a, _out: i32| async { Ok::<_, std::io::Error>(()) })
///     .stop_when_idle()
///     .build()?
///     .run()
///     .await?;
/// assert_eq!(report.completed, 3); // each record once, however often it was polled
/// # Ok(())
/// # }
/// ```
pub struct Pipeline<L, T> {
    builder: PipelineBuilder<L, T>,
    work: Arc<WorkFn<T>>,
    /// The queue's counters, made before the queue so that [`Progress`] can show them.
    counters: Arc<Counters>,
    /// What the pipeline counts besides.
    own: Arc<PipelineCounters>,
}

impl<L: LedgerAdmin> Pipeline<L, ()> {
    /// A builder for a pipeline over `ledger`.
    pub fn builder<T: Send + Sync + 'static>(ledger: L) -> PipelineBuilder<L, T> {
        PipelineBuilder::new(ledger)
    }
}

impl<L: LedgerAdmin, T: Send + Sync + 'static> Pipeline<L, T> {
    /// A token that stops the pipeline gracefully when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.builder.shutdown.clone()
    }

    /// A live view of the counters, for progress bars and health checks.
    pub fn progress(&self) -> Progress {
        Progress {
            counters: self.counters.clone(),
            own: self.own.clone(),
            started: tokio::time::Instant::now(),
        }
    }

    /// Runs until stopped (see [Stopping](self#stopping)) and reports what happened.
    ///
    /// # Errors
    ///
    /// - When the pipeline cannot start (a queue cannot be built).
    /// - When the ledger fails with an error that retrying cannot fix (see
    ///   [`Error::is_transient`](crate::Error::is_transient)): corrupt data, a schema newer
    ///   than this build, permission denied, a misconfiguration. The pipeline stops at once:
    ///   it stops polling, cancels running attempts, releases what it holds where the ledger
    ///   still takes it, and returns that error.
    /// - When the ledger stays unavailable past
    ///   [`give_up_after`](PipelineBuilder::give_up_after), if set
    ///   ([`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)).
    ///
    /// Transient failures (an unreachable or restarting ledger), failed polls and failed
    /// attempts are retried, logged and counted in the [`Report`]. A stop — a token, a
    /// signal, idleness — is `Ok`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the run without a graceful stop: jobs are dropped (and
    /// so released), but running user futures are cancelled at their next await point. Use
    /// the shutdown token to stop gracefully.
    pub async fn run(self) -> Result<Report> {
        run::run(self).await
    }
}

impl<L: fmt::Debug, T> fmt::Debug for Pipeline<L, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("builder", &self.builder)
            .finish_non_exhaustive()
    }
}

/// A live view of a running pipeline's counters.
#[derive(Debug, Clone)]
pub struct Progress {
    counters: Arc<Counters>,
    own: Arc<PipelineCounters>,
    started: tokio::time::Instant,
}

impl Progress {
    /// The counters so far, as a [`Report`].
    pub fn snapshot(&self) -> Report {
        Report::new(self.counters.counts(), &self.own, self.started.elapsed())
    }

    /// Attempts running now in this process (including accepted entries waiting for a
    /// worker, which the ledger already counts as Running).
    pub fn running(&self) -> u64 {
        self.counters.counts().running
    }

    /// How long the ledger has been unavailable (failing with errors worth retrying), while
    /// it is; `None` while it answers. For a progress line or a health check: a pipeline
    /// rides out an outage, retrying, unless told to
    /// [`give_up_after`](PipelineBuilder::give_up_after) a limit.
    pub fn ledger_down_for(&self) -> Option<std::time::Duration> {
        self.counters.ledger_outage().map(|(down, _)| down)
    }

    /// The last error of the ledger while it is unavailable, as text.
    pub fn ledger_error(&self) -> Option<String> {
        self.counters.ledger_outage().map(|(_, e)| e.to_string())
    }
}
