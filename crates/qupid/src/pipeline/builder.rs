//! The pipeline builder.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{Attempt, Backoff, Pipeline, Source, StepError, WorkFn};
use crate::error::{BoxError, Error, Result};
use crate::ledger::Ledger;
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
/// | stop | only when told: [`shutdown`](PipelineBuilder::shutdown), Ctrl-C if [`stop_on_ctrl_c`](PipelineBuilder::stop_on_ctrl_c), or idle if [`stop_when_idle`](PipelineBuilder::stop_when_idle); a pipeline whose sources are all finished streams stops by itself |
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
    pub(crate) ctrl_c: bool,
    pub(crate) until_idle: bool,
}

impl<L: Ledger, T: Send + Sync + 'static> PipelineBuilder<L, T> {
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
            ctrl_c: false,
            until_idle: false,
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

    /// Stops gracefully on Ctrl-C; a second Ctrl-C skips the drain.
    pub fn stop_on_ctrl_c(mut self) -> Self {
        self.ctrl_c = true;
        self
    }

    /// Stops once there is nothing left to do: a poll of every source (started after the
    /// last job ended) accepted nothing, and no key is in flight.
    pub fn stop_when_idle(mut self) -> Self {
        self.until_idle = true;
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
        Ok(Pipeline {
            builder: self,
            work,
            counters,
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
            .finish_non_exhaustive()
    }
}

/// A pipeline builder with its `process` step, waiting for its `save` step.
pub struct ProcessStep<L, T, P, O> {
    builder: PipelineBuilder<L, T>,
    process: P,
    output: PhantomData<fn() -> O>,
}

impl<L: Ledger, T: Send + Sync + 'static, P, O: Send + 'static> ProcessStep<L, T, P, O> {
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
