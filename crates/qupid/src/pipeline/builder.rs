//! The pipeline builder.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::report::PipelineCounters;
use super::{Attempt, Backoff, Pipeline, Source, StepError, WorkFn};
use crate::error::{BoxError, Error, Result};
use crate::ledger::LedgerAdmin;
use crate::observe::Counters;
use crate::policy::Policy;

/// Builds a [`Pipeline`]: sources, a `process` step and a `save` step, and settings.
///
/// ## Defaults
///
/// | setting | default |
/// |---|---|
/// | `concurrency` | 16 attempts at once |
/// | `timeout` | 10 minutes per attempt (`process` and `save` together) |
/// | `backoff` | [`Backoff::default()`]: 100 ms doubling to 30 s, 50% jitter |
/// | `policy` | [`Policy::default()`]: 5 attempts, completed keys block forever |
/// | `buffer` | 4 × `concurrency` accepted entries waiting for a worker |
/// | `drain_timeout` | 30 s for running attempts to finish on stop |
/// | stop | only when told: [`shutdown`](PipelineBuilder::shutdown), SIGINT/SIGTERM if [`stop_on_signals`](PipelineBuilder::stop_on_signals), idle if [`stop_when_idle`](PipelineBuilder::stop_when_idle), drained if [`stop_when_drained`](PipelineBuilder::stop_when_drained); a pipeline whose sources are all finished streams stops by itself |
/// | `give_up_after` | never: a ledger outage is ridden out however long it lasts (errors that retrying cannot fix end the run at once) |
pub struct PipelineBuilder<L, T> {
    pub(crate) ledger: L,
    pub(crate) sources: Vec<Source<T>>,
    pub(crate) work: Option<Arc<WorkFn<T>>>,
    pub(crate) concurrency: usize,
    pub(crate) timeout: Option<Duration>,
    pub(crate) backoff: Backoff,
    pub(crate) policy: Policy,
    pub(crate) name: String,
    pub(crate) buffer: Option<usize>,
    pub(crate) drain: Duration,
    pub(crate) shutdown: CancellationToken,
    pub(crate) signals: Option<Signals>,
    pub(crate) until: Until,
    pub(crate) give_up_after: Option<Duration>,
}

/// Which signals stop a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signals {
    /// Ctrl-C (SIGINT on Unix).
    CtrlC,
    /// SIGINT and SIGTERM on Unix; Ctrl-C elsewhere.
    All,
}

/// When a pipeline stops by itself (besides a stop signal, token, or finished streams).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Only when told.
    Told,
    /// When this process has nothing left to do.
    Idle,
    /// When everything the sources return is finished in the ledger.
    Drained,
}

impl<L: LedgerAdmin, T: Send + Sync + 'static> PipelineBuilder<L, T> {
    pub(crate) fn new(ledger: L) -> Self {
        PipelineBuilder {
            ledger,
            sources: Vec::new(),
            work: None,
            concurrency: 16,
            timeout: Some(Duration::from_secs(600)),
            backoff: Backoff::default(),
            policy: Policy::default(),
            name: "default".into(),
            buffer: None,
            drain: Duration::from_secs(30),
            shutdown: CancellationToken::new(),
            signals: None,
            until: Until::Told,
            give_up_after: None,
        }
    }

    /// Adds a source. Several sources merge into one queue.
    pub fn source(mut self, source: Source<T>) -> Self {
        self.sources.push(source);
        self
    }

    /// The `process` step: turns an entry into output. Follow it with
    /// [`save`](ProcessStep::save). An error (or a panic, or a timeout) fails the attempt.
    pub fn process<P, Fut, O, E>(self, process: P) -> ProcessStep<L, T, P, O>
    where
        P: Fn(Attempt<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        E: Into<BoxError>,
        O: Send + 'static,
    {
        ProcessStep {
            builder: self,
            process,
            output: PhantomData,
        }
    }

    /// How many attempts run at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// The longest an attempt (`process` then `save`) may take; `None` for no limit.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The wait between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The policy: leases, attempts, what blocks duplicates, retention.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The pipeline's name: the `queue` label of its metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many accepted entries may wait for a worker.
    pub fn buffer(mut self, n: usize) -> Self {
        self.buffer = Some(n);
        self
    }

    /// How long running attempts get to finish after a stop, before they are cancelled and
    /// their keys released.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain = d;
        self
    }

    /// Stops the pipeline gracefully when `token` is cancelled.
    pub fn shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Stops gracefully on Ctrl-C; a second Ctrl-C skips the drain. Prefer
    /// [`stop_on_signals`](PipelineBuilder::stop_on_signals) for a service: systemd, Docker
    /// and Kubernetes stop processes with SIGTERM.
    pub fn stop_on_ctrl_c(mut self) -> Self {
        self.signals = Some(Signals::CtrlC);
        self
    }

    /// Stops gracefully on SIGINT (Ctrl-C) or SIGTERM on Unix, and on Ctrl-C elsewhere: the
    /// same stop as a [`shutdown`](PipelineBuilder::shutdown) token, so `kill`, systemd,
    /// Docker and Kubernetes get a drained pipeline and a [`Report`](crate::Report). A second
    /// signal skips the drain (running attempts are cancelled and their keys released).
    pub fn stop_on_signals(mut self) -> Self {
        self.signals = Some(Signals::All);
        self
    }

    /// Stops once there is nothing left to do *in this process*: a poll of every source
    /// (started after the last job ended) accepted nothing, and no key is held here.
    ///
    /// Keys in flight elsewhere (another instance, or one that crashed and whose leases have
    /// not expired yet) are duplicates, so this stops even while they are pending. For a batch
    /// job run on several machines, see [`stop_when_drained`](PipelineBuilder::stop_when_drained).
    pub fn stop_when_idle(mut self) -> Self {
        self.until = Until::Idle;
        self
    }

    /// Stops once everything the sources return is finished in the ledger, wherever it was
    /// processed: a poll of every source (started after the last job ended) found only keys
    /// that are Completed or Dead, and no key is held here.
    ///
    /// A key in flight in another instance keeps this one polling until that instance ends
    /// it; a key held by a crashed instance is taken over once its lease expires (within
    /// [`Policy::lease`](crate::Policy::lease)) and processed here. So every instance of a
    /// batch job can stop by itself, and nothing is left behind by one that was killed.
    ///
    /// With a policy whose finished keys do not block (`Blocking::Never`, or a window that
    /// passes), finished keys are accepted again, and the pipeline never drains.
    pub fn stop_when_drained(mut self) -> Self {
        self.until = Until::Drained;
        self
    }

    /// Ends the run with the ledger's error once the ledger has been unavailable (failing
    /// with transient errors) for `limit` without a break. Unset, a pipeline rides out an
    /// outage of any length, retrying with backoff (and logging an `ERROR` once it has lasted
    /// a lease); errors that retrying cannot fix end the run at once either way.
    pub fn give_up_after(mut self, limit: Duration) -> Self {
        self.give_up_after = Some(limit);
        self
    }

    /// Checks the settings and builds the pipeline.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) without a source or without
    /// `process`/`save`, with a concurrency or buffer of zero, or with an invalid policy.
    pub fn build(self) -> Result<Pipeline<L, T>> {
        self.policy.validate()?;
        if self.sources.is_empty() {
            return Err(Error::config("a pipeline needs at least one source"));
        }
        let Some(work) = self.work.clone() else {
            return Err(Error::config(
                "a pipeline needs a process step and a save step",
            ));
        };
        if self.concurrency == 0 {
            return Err(Error::config("concurrency must be at least 1, found 0"));
        }
        if self.buffer == Some(0) {
            return Err(Error::config("buffer must be at least 1, found 0"));
        }
        let counters = Arc::new(Counters::new(&self.name));
        let own = Arc::new(PipelineCounters::new(&self.name));
        Ok(Pipeline {
            builder: self,
            work,
            counters,
            own,
        })
    }
}

impl<L: fmt::Debug, T> fmt::Debug for PipelineBuilder<L, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("ledger", &self.ledger)
            .field("sources", &self.sources)
            .field("concurrency", &self.concurrency)
            .field("policy", &self.policy)
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

/// A pipeline builder with its `process` step, waiting for its `save` step.
pub struct ProcessStep<L, T, P, O> {
    builder: PipelineBuilder<L, T>,
    process: P,
    output: PhantomData<fn() -> O>,
}

impl<L: LedgerAdmin, T: Send + Sync + 'static, P, O: Send + 'static> ProcessStep<L, T, P, O> {
    /// The `save` step: stores the output. The key is completed only once it succeeds; an
    /// error (or a panic, or a timeout) fails the attempt. Make it idempotent: after a crash
    /// or an expired lease, the same output may be saved twice.
    pub fn save<PFut, E, S, SFut, E2>(self, save: S) -> PipelineBuilder<L, T>
    where
        P: Fn(Attempt<T>) -> PFut + Send + Sync + 'static,
        PFut: Future<Output = Result<O, E>> + Send + 'static,
        E: Into<BoxError>,
        S: Fn(Attempt<T>, O) -> SFut + Send + Sync + 'static,
        SFut: Future<Output = Result<(), E2>> + Send + 'static,
        E2: Into<BoxError>,
    {
        let process = self.process;
        let save = Arc::new(save);
        let work = move |attempt: Attempt<T>| -> BoxFuture<'static, Result<(), StepError>> {
            let processing = process(attempt.clone());
            let save = save.clone();
            Box::pin(async move {
                let out = processing.await.map_err(|e| StepError::Process(e.into()))?;
                // Another holder may have the key by now: its save must not be overwritten by
                // this older attempt's.
                if attempt.is_expired() {
                    return Err(StepError::Expired);
                }
                save(attempt, out)
                    .await
                    .map_err(|e| StepError::Save(e.into()))
            })
        };
        let mut builder = self.builder;
        builder.work = Some(Arc::new(work));
        builder
    }
}

impl<L: fmt::Debug, T, P, O> fmt::Debug for ProcessStep<L, T, P, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessStep")
            .field("builder", &self.builder)
            .finish_non_exhaustive()
    }
}
