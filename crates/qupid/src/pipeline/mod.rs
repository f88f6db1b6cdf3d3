//! The pipeline: sources → process → save, de-duplicated — the high level.
//!
//! A pipeline polls its [`Source`]s, offers every entry to the ledger (one call per batch),
//! and runs `process` then `save` on each accepted entry, `concurrency` at a time. The key is
//! completed only after `save` succeeds. A failed attempt (an error, a panic, a timeout) is
//! retried after a [`Backoff`] until `policy.max_attempts`, then the key is Dead.
//!
//! An accepted key's first attempt starts in the same ledger call that accepted it
//! ([`Ledger::offer_and_start`]): a key costs the ledger two writes (accept-and-start,
//! complete), and workers never wait for the ledger before working. So the entries waiting in
//! the pipeline's buffer (a few times `concurrency`) show as Running in the ledger, and a
//! stop releases them (their records are removed, so the next poll offers them afresh).
//!
//! # Stopping
//!
//! A stop (from [`PipelineBuilder::shutdown`], Ctrl-C with
//! [`stop_on_ctrl_c`](PipelineBuilder::stop_on_ctrl_c), or idleness with
//! [`stop_when_idle`](PipelineBuilder::stop_when_idle)) stops polling and accepting, releases
//! what never started, lets running attempts finish up to the drain timeout, then cancels and
//! releases the rest. Nothing is lost: a released key is offered again by the next poll.

mod attempt;
mod backoff;
mod builder;
mod report;
mod run;
mod source;

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
use crate::ledger::Ledger;
use crate::observe::Counters;

/// `process` then `save`, boxed once per attempt.
pub(crate) type WorkFn<T> =
    dyn Fn(Attempt<T>) -> BoxFuture<'static, Result<(), StepError>> + Send + Sync;

/// Which step failed, and why.
#[derive(Debug)]
pub(crate) enum StepError {
    Process(BoxError),
    Save(BoxError),
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Process(e) => write!(f, "process: {e}"),
            StepError::Save(e) => write!(f, "save: {e}"),
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
    counters: Arc<Counters>,
}

impl<L: Ledger> Pipeline<L, ()> {
    /// A builder for a pipeline over `ledger`.
    pub fn builder<T: Send + Sync + 'static>(ledger: L) -> PipelineBuilder<L, T> {
        PipelineBuilder::new(ledger)
    }
}

impl<L: Ledger, T: Send + Sync + 'static> Pipeline<L, T> {
    /// A token that stops the pipeline gracefully when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.builder.shutdown.clone()
    }

    /// A live view of the counters, for progress bars and health checks.
    pub fn progress(&self) -> Progress {
        Progress {
            counters: self.counters.clone(),
            started: tokio::time::Instant::now(),
        }
    }

    /// Runs until stopped (see [Stopping](self#stopping)) and reports what happened.
    ///
    /// # Errors
    ///
    /// Only when the pipeline cannot start (a queue cannot be built). Failures of sources,
    /// steps and the ledger during the run are retried, logged and counted in the
    /// [`Report`], never returned.
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
    started: tokio::time::Instant,
}

impl Progress {
    /// The counters so far, as a [`Report`].
    pub fn snapshot(&self) -> Report {
        Report::from_counters(&self.counters, self.started.elapsed())
    }

    /// Attempts running now in this process.
    pub fn running(&self) -> u64 {
        self.counters.running.get().max(0) as u64
    }
}
