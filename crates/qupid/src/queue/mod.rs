//! The queue: publish entries, subscribe to jobs — the low level under the pipeline.
//!
//! [`Queue::publish`] offers an entry to the ledger and, if accepted, puts it on a bounded
//! buffer; subscribers receive [`Job`]s. Each job owns its key's lease, which one background
//! task renews for all jobs at once (a third of the way through each lease, in batches).
//! Ending a job (`complete`, `fail`, `release`) goes through one task that groups the calls of
//! all jobs into batched ledger calls.
//!
//! ```
//! use qupid::{Entry, MemoryLedger, Queue};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qupid::Result<()> {
//! let queue = Queue::builder(MemoryLedger::new()).capacity(16).build()?;
//! let sub = queue.subscribe();
//! queue.publish(Entry::new("orders/1", "payload")?).await?;
//! assert!(queue.publish(Entry::new("orders/1", "payload")?).await?.is_duplicate());
//!
//! let job = sub.recv().await.expect("a job");
//! assert_eq!(job.key().as_str(), "orders/1");
//! job.complete().await?;
//! # Ok(())
//! # }
//! ```

pub(crate) mod core;
mod job;

use std::fmt;
use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub use job::{FailOutcome, Job, LeaseDeadline};

use self::core::{ender, renewer, Core, Grant, Registry, Renewals};
use crate::error::{Error, ErrorKind, Result};
use crate::key::Entry;
use crate::ledger::{Ledger, LedgerAdmin, Offered, Purged, State, Token, Unreadable};
use crate::observe::Counters;
use crate::policy::Policy;

/// The answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The entry was accepted and is on the buffer, under this token.
    Accepted(Token),
    /// The key is already in this state; the entry was dropped.
    Duplicate(State),
    /// The entry's [ordered version](crate::Version::ordered) is older than the newest
    /// version the ledger has accepted for the key, which is in this state; the entry was
    /// dropped and nothing changed (see [`Offered::Outdated`]).
    Outdated(State),
    /// The ledger holds something under the key that it cannot read (a foreign value, a
    /// damaged record); the entry was dropped and nothing changed. It stays so until the
    /// record is repaired (`qupid remove --force KEY` deletes it).
    Unreadable(Unreadable),
}

impl Published {
    /// Whether the entry was a duplicate.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Published::Duplicate(_))
    }
}

/// A publish that did not go through, with the entries it gives back.
pub struct PublishError<T> {
    error: Error,
    entries: Vec<Entry<T>>,
}

impl<T> PublishError<T> {
    /// Why: [`ErrorKind::Full`] (from `try_publish`), [`ErrorKind::Closed`], or a ledger error.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }

    /// The underlying error.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The entries that were not published (none of them was accepted).
    pub fn into_entries(self) -> Vec<Entry<T>> {
        self.entries
    }
}

impl<T> fmt::Debug for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishError")
            .field("error", &self.error)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl<T> fmt::Display for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} entries not published)",
            self.error,
            self.entries.len()
        )
    }
}

impl<T> std::error::Error for PublishError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<PublishError<T>> for Error {
    fn from(e: PublishError<T>) -> Self {
        e.error
    }
}

/// Builds a [`Queue`].
///
/// ## Defaults
///
/// | setting | default |
/// |---|---|
/// | `capacity` | 1024 accepted entries waiting for a subscriber |
/// | `policy` | [`Policy::default()`] |
/// | `name` | `"default"` (the `queue` label of metrics) |
/// | `start_on_publish` | `false`: accepted entries wait Queued; subscribers start them |
#[derive(Debug)]
pub struct QueueBuilder<L> {
    ledger: L,
    policy: Policy,
    capacity: usize,
    name: String,
    start_on_publish: bool,
    counters: Option<Arc<Counters>>,
}

impl<L: Ledger> QueueBuilder<L> {
    /// Counts into `counters`, made beforehand, instead of into counters of its own: for
    /// something that watches the queue before it exists (a progress line made before the
    /// run). See [`Counters`] for an example.
    ///
    /// The counters' name labels their metrics; give it the queue's [`name`](Self::name).
    pub fn counters(mut self, counters: Arc<Counters>) -> Self {
        self.counters = Some(counters);
        self
    }

    /// How many accepted entries may wait for a subscriber before `publish` waits.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The policy: leases, attempts, blocking, retention.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The queue's name, used as the `queue` label of metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Starts each accepted entry's attempt as it is published, in the same ledger call as
    /// the offer ([`Ledger::offer_and_start`]), instead of when a subscriber takes it.
    ///
    /// One ledger write per key instead of two, and subscribers never wait for the ledger
    /// before working: worth it when subscribers keep up with publishers (a pipeline, whose
    /// buffer is a few times its concurrency). The cost: buffered entries are Running in the
    /// ledger (and in the [`RUNNING`](crate::observe::names::RUNNING) gauge) before any work
    /// begins, and their attempt is counted even if the queue stops before a subscriber takes
    /// them (they are then released, which forgets the attempt with the record).
    pub fn start_on_publish(mut self, yes: bool) -> Self {
        self.start_on_publish = yes;
        self
    }

    /// Builds the queue and starts its background tasks (lease renewal, batched endings) on
    /// the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] if the policy is invalid or the capacity is zero.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn build<T: Send + Sync + 'static>(self) -> Result<Queue<L, T>> {
        self.policy.validate()?;
        if self.capacity == 0 || self.capacity > Semaphore::MAX_PERMITS {
            return Err(Error::config(format!(
                "capacity must be between 1 and {}, found {}",
                Semaphore::MAX_PERMITS,
                self.capacity
            )));
        }
        let ledger = Arc::new(self.ledger);
        let counters = self
            .counters
            .unwrap_or_else(|| Arc::new(Counters::new(&self.name)));
        let registry = Arc::new(Registry::new(counters.clone()));
        let (ops, rx) = mpsc::unbounded_channel();
        let renewer_stop = CancellationToken::new();
        let exec: Arc<dyn core::Exec> = Arc::new(core::Executor {
            ledger: ledger.clone(),
            policy: self.policy.clone(),
            registry: registry.clone(),
            counters: counters.clone(),
        });
        let renewals = Arc::new(Renewals::new(self.policy.lease));
        let core = Arc::new(Core {
            ops,
            registry: registry.clone(),
            counters: counters.clone(),
            lease: self.policy.lease,
            renewals: renewals.clone(),
            direct: ledger.groups_calls().then(|| exec.clone()),
            _renewer: renewer_stop.clone().drop_guard(),
        });
        let stop = CancellationToken::new();
        let ender = tokio::spawn(ender(exec, rx));
        tokio::spawn(renewer(
            ledger.clone(),
            self.policy.clone(),
            registry,
            counters.clone(),
            renewals,
            renewer_stop,
        ));
        let (tx, jobs) = async_channel::unbounded();
        Ok(Queue {
            inner: Arc::new(Inner {
                ledger,
                policy: self.policy,
                core,
                tx,
                jobs,
                space: Arc::new(Semaphore::new(self.capacity)),
                capacity: self.capacity,
                start_on_publish: self.start_on_publish,
                stop,
                ender: std::sync::Mutex::new(Some(ender)),
            }),
        })
    }
}

/// A de-duplicating queue over a [`Ledger`]. Cloning is cheap: clones share the queue.
///
/// See the [module docs](self) for an example.
pub struct Queue<L, T> {
    inner: Arc<Inner<L, T>>,
}

struct Inner<L, T> {
    ledger: Arc<L>,
    policy: Policy,
    core: Arc<Core>,
    tx: async_channel::Sender<Job<T>>,
    jobs: async_channel::Receiver<Job<T>>,
    /// Free places on the buffer: taken before offering, so nothing accepted ever waits.
    space: Arc<Semaphore>,
    capacity: usize,
    start_on_publish: bool,
    stop: CancellationToken,
    ender: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<L, T> Clone for Queue<L, T> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
        }
    }
}

impl<L: fmt::Debug, T> fmt::Debug for Queue<L, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("ledger", &self.inner.ledger)
            .field("buffered", &self.inner.jobs.len())
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

impl<L: Ledger> Queue<L, ()> {
    /// A builder for a queue over `ledger`.
    pub fn builder(ledger: L) -> QueueBuilder<L> {
        QueueBuilder {
            ledger,
            policy: Policy::default(),
            capacity: 1024,
            name: "default".into(),
            start_on_publish: false,
            counters: None,
        }
    }
}

impl<L: Ledger, T: Send + Sync + 'static> Queue<L, T> {
    /// Offers `entry` and, if accepted, puts it on the buffer, waiting for space.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after [`close`](Queue::close), or a ledger error; the entry is
    /// given back in the error.
    ///
    /// # Cancel safety
    ///
    /// Space is reserved before the offer: if dropped while waiting for space, nothing
    /// happened. If dropped during the offer, the key may be accepted without a job; its lease
    /// expires and the next poll offers it again.
    pub async fn publish(&self, entry: Entry<T>) -> Result<Published, PublishError<T>> {
        let mut out = self.publish_batch(vec![entry]).await?;
        Ok(out.remove(0))
    }

    /// Like [`publish`](Queue::publish), but never waits for space.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Full`] if the buffer is full (nothing was offered), otherwise as
    /// [`publish`](Queue::publish).
    ///
    /// # Cancel safety
    ///
    /// As [`publish`](Queue::publish).
    pub async fn try_publish(&self, entry: Entry<T>) -> Result<Published, PublishError<T>> {
        if self.is_closed() {
            return Err(self.closed_error(vec![entry]));
        }
        let Ok(permit) = self.inner.space.clone().try_acquire_owned() else {
            let error = Error::new(
                ErrorKind::Full,
                format!(
                    "the queue's buffer is full ({} entries)",
                    self.inner.capacity
                ),
            );
            return Err(PublishError {
                error,
                entries: vec![entry],
            });
        };
        let mut out = self.offer_reserved(vec![entry], permit).await?;
        Ok(out.remove(0))
    }

    /// Offers a batch in one ledger call (per `capacity` entries) and buffers what is
    /// accepted. Answers one [`Published`] per entry, in order.
    ///
    /// # Errors
    ///
    /// As [`publish`](Queue::publish); the entries not yet offered are given back.
    ///
    /// # Cancel safety
    ///
    /// As [`publish`](Queue::publish).
    pub async fn publish_batch(
        &self,
        entries: Vec<Entry<T>>,
    ) -> Result<Vec<Published>, PublishError<T>> {
        let (out, _) = self.publish_chunks(entries, None).await?;
        Ok(out)
    }

    /// Like [`publish_batch`](Queue::publish_batch), but offers nothing once `deadline` has
    /// passed: answers the [`Published`] of the entries offered (the first ones, in order) and
    /// gives back the rest, which were still waiting for buffer space.
    ///
    /// For entries read from a source at one moment: offered long after, an entry may be
    /// older than what another instance has processed since. A poll's entries not offered in
    /// time are better dropped and polled again, fresh.
    ///
    /// # Errors
    ///
    /// As [`publish`](Queue::publish); the entries not yet offered are given back.
    ///
    /// # Cancel safety
    ///
    /// As [`publish`](Queue::publish).
    pub async fn publish_batch_until(
        &self,
        entries: Vec<Entry<T>>,
        deadline: tokio::time::Instant,
    ) -> Result<(Vec<Published>, Vec<Entry<T>>), PublishError<T>> {
        self.publish_chunks(entries, Some(deadline)).await
    }

    async fn publish_chunks(
        &self,
        entries: Vec<Entry<T>>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(Vec<Published>, Vec<Entry<T>>), PublishError<T>> {
        let mut out = Vec::with_capacity(entries.len());
        let mut rest = entries.into_iter().peekable();
        let too_late = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(too_late);
        while rest.peek().is_some() {
            if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
                return Ok((out, rest.collect()));
            }
            let chunk: Vec<Entry<T>> = rest.by_ref().take(self.inner.capacity).collect();
            if self.is_closed() {
                let mut back = chunk;
                back.extend(rest);
                return Err(self.closed_error(back));
            }
            let n = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            let permit = tokio::select! {
                biased;
                p = self.inner.space.clone().acquire_many_owned(n) => p,
                _ = self.inner.stop.cancelled() => {
                    let mut back = chunk;
                    back.extend(rest);
                    return Err(self.closed_error(back));
                }
                _ = &mut too_late => {
                    let mut late = chunk;
                    late.extend(rest);
                    return Ok((out, late));
                }
            };
            let Ok(permit) = permit else {
                let mut back = chunk;
                back.extend(rest);
                return Err(self.closed_error(back));
            };
            match self.offer_reserved(chunk, permit).await {
                Ok(o) => out.extend(o),
                Err(mut e) => {
                    e.entries.extend(rest);
                    return Err(e);
                }
            }
        }
        Ok((out, Vec::new()))
    }

    /// Offers entries for which `space` holds one buffer place each. Each accepted entry's
    /// job takes one place, given back when a subscriber takes the job; the rest go back when
    /// the offer is answered, or when this future is dropped before that.
    async fn offer_reserved(
        &self,
        entries: Vec<Entry<T>>,
        mut space: OwnedSemaphorePermit,
    ) -> Result<Vec<Published>, PublishError<T>> {
        let inner = &self.inner;
        let offers: Vec<_> = entries.iter().map(Entry::offer).collect();
        let c = &inner.core.counters;
        c.offered.add(offers.len() as u64);
        let sent = tokio::time::Instant::now();
        let outcomes = if inner.start_on_publish {
            inner.ledger.offer_and_start(&inner.policy, &offers).await
        } else {
            inner.ledger.offer(&inner.policy, &offers).await
        };
        let outcomes = match outcomes {
            Ok(o) => {
                c.ledger.ok();
                o
            }
            Err(error) => {
                c.ledger_errors.add(1);
                c.ledger.failed(&error);
                return Err(PublishError { error, entries });
            }
        };
        let mut out = Vec::with_capacity(outcomes.len());
        let (mut accepted, mut duplicates, mut in_flight, mut outdated) = (0, 0, 0, 0);
        // One clock read for the batch: its claims are held from now on.
        let held = tokio::time::Instant::now();
        for (entry, o) in entries.into_iter().zip(outcomes) {
            match o {
                Offered::Accepted(lease) => {
                    accepted += 1;
                    let job = Job::new(
                        entry,
                        lease.token,
                        lease.attempts,
                        inner.start_on_publish,
                        inner.core.clone(),
                        space.split(1),
                        Grant { sent, held },
                    );
                    // Unbounded underneath: `space` is the bound. If the queue closed in the
                    // meantime the job is dropped, which releases its key.
                    let _ = inner.tx.try_send(job);
                    out.push(Published::Accepted(lease.token));
                }
                Offered::Duplicate(state) => {
                    duplicates += 1;
                    if state.is_leased() {
                        in_flight += 1;
                    }
                    out.push(Published::Duplicate(state));
                }
                Offered::Outdated(state) => {
                    outdated += 1;
                    tracing::debug!(
                        key = %entry.key,
                        version = ?entry.version,
                        %state,
                        "an older version than the ledger accepted: dropped"
                    );
                    out.push(Published::Outdated(state));
                }
                Offered::Unreadable(unreadable) => {
                    c.unreadable(&entry.key, &unreadable);
                    out.push(Published::Unreadable(unreadable));
                }
            }
        }
        c.accepted.add(accepted);
        c.duplicates.add(duplicates);
        c.in_flight.add(in_flight);
        c.outdated.add(outdated);
        Ok(out)
    }

    fn closed_error(&self, entries: Vec<Entry<T>>) -> PublishError<T> {
        PublishError {
            error: Error::new(ErrorKind::Closed, "the queue is closed"),
            entries,
        }
    }

    /// A handle that receives jobs. Subscribers share the buffer: each job goes to one.
    pub fn subscribe(&self) -> Subscriber<T> {
        Subscriber {
            jobs: self.inner.jobs.clone(),
        }
    }

    /// Stops accepting publishes. Subscribers receive what is buffered, then `None`.
    pub fn close(&self) {
        self.inner.tx.close();
        self.inner.stop.cancel();
    }

    /// Whether [`close`](Queue::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.tx.is_closed()
    }

    /// Releases every buffered job that no subscriber has taken, and answers how many.
    pub fn release_buffered(&self) -> usize {
        let mut n = 0;
        while let Ok(job) = self.inner.jobs.try_recv() {
            drop(job);
            n += 1;
        }
        n
    }

    /// Accepted entries waiting for a subscriber.
    pub fn buffered(&self) -> usize {
        self.inner.jobs.len()
    }

    /// Keys this process holds a lease on (buffered, running or waiting to retry).
    pub fn held(&self) -> usize {
        self.inner.core.registry.len()
    }

    /// The ledger.
    pub fn ledger(&self) -> &L {
        &self.inner.ledger
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The queue's counters: what it offered, accepted, ended, and whether its ledger
    /// answers.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.inner.core.counters
    }

    /// Closes the queue, releases what is buffered, and waits until every ending asked of
    /// the ledger has been sent to it. Jobs still alive elsewhere keep working; their endings
    /// are sent when they end.
    pub async fn shutdown(self) {
        self.close();
        self.release_buffered();
        let handle = self
            .inner
            .ender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(self);
        if let Some(handle) = handle {
            // The ender stops once the queue and every job are gone.
            let _ = handle.await;
        }
    }
}

impl<L: LedgerAdmin, T: Send + Sync + 'static> Queue<L, T> {
    /// Purges finished records by the policy's [`retention`](Policy::retention), as
    /// [`LedgerAdmin::purge`] does, and counts the call like the queue's own: a failure is
    /// a ledger error in the [`counters`](Queue::counters), and one that retrying cannot
    /// fix is their [`ledger_failure`](Counters::ledger_failure).
    ///
    /// # Errors
    ///
    /// The ledger's error.
    ///
    /// # Cancel safety
    ///
    /// As the ledger's `purge`: dropping it may leave part of the purge done.
    pub async fn purge(&self) -> Result<Purged> {
        let out = self.inner.ledger.purge(&self.inner.policy.retention).await;
        self.inner.core.counters.ledger_call(&out);
        out
    }
}

/// Receives jobs from a [`Queue`]. Cloning is cheap; clones share the buffer.
pub struct Subscriber<T> {
    jobs: async_channel::Receiver<Job<T>>,
}

impl<T> Clone for Subscriber<T> {
    fn clone(&self) -> Self {
        Subscriber {
            jobs: self.jobs.clone(),
        }
    }
}

impl<T> fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("buffered", &self.jobs.len())
            .finish()
    }
}

impl<T: Send + Sync + 'static> Subscriber<T> {
    /// The next job, started (Running, attempt counted). `None` once the queue is closed and
    /// its buffer is empty. Jobs whose lease was lost while buffered are skipped.
    ///
    /// # Cancel safety
    ///
    /// If dropped while starting a job, that job is released.
    pub async fn recv(&self) -> Option<Job<T>> {
        loop {
            let mut job = self.jobs.recv().await.ok()?;
            job.leave_buffer();
            if job.is_running() {
                // Started on publish.
                if job.lease_lost().is_cancelled() {
                    job.forget_lost();
                    continue;
                }
                return Some(job);
            }
            if job.start_patiently().await.is_ok() {
                return Some(job);
            }
        }
    }

    /// The next job as it was buffered, or `None` once closed and empty: Queued, unless the
    /// queue [starts on publish](QueueBuilder::start_on_publish).
    pub async fn recv_unstarted(&self) -> Option<Job<T>> {
        let mut job = self.jobs.recv().await.ok()?;
        job.leave_buffer();
        Some(job)
    }
}
