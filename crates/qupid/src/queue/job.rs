//! A job: one accepted entry, owning its lease until it ends.

use std::fmt;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::core::{Answer, Ask, Core, Grant, Renewals};
use crate::error::{Error, ErrorKind, Result};
use crate::key::{Entry, Key};
use crate::ledger::{Claim, Done, Failed, Refused, State, Token};

/// One accepted entry, owning the lease on its key.
///
/// A job is a guard: it ends by [`complete`](Job::complete), [`fail`](Job::fail) or
/// [`release`](Job::release), each of which consumes it. A job dropped without an ending is
/// released (its key is offered again by the next poll), never leaked. While it lives, its
/// lease is renewed in the background, together with every other job of the queue.
///
/// If a renewal finds the lease lost (another holder took over after an expiry, or the key was
/// removed by force), [`lease_lost`](Job::lease_lost) is cancelled at once: stop the work.
/// [`token`](Job::token) is the lease's fencing token, to make a save conditional on it.
pub struct Job<T> {
    entry: Arc<Entry<T>>,
    claim: Claim,
    attempt: u32,
    running: bool,
    ended: bool,
    lost: CancellationToken,
    core: Arc<Core>,
    /// The job's place on the queue's buffer, given back when a subscriber takes it.
    slot: Option<OwnedSemaphorePermit>,
    /// When the lease was granted, for its deadline.
    grant: Grant,
}

/// The outcome of [`Job::fail`].
#[derive(Debug)]
pub enum FailOutcome<T> {
    /// Attempts remain: the job is back, Queued and still leased. Wait a backoff, then
    /// [`start`](Job::start) it again.
    Retry(Job<T>),
    /// That was the last attempt: the key is Dead.
    Dead {
        /// Attempts made.
        attempts: u32,
    },
}

fn refused(r: Refused) -> Error {
    match r {
        Refused::LeaseLost | Refused::Unreadable(_) => {
            Error::new(ErrorKind::LeaseLost, r.to_string())
        }
        Refused::WrongState(_) => Error::new(ErrorKind::Ledger, r.to_string()),
    }
}

fn unexpected() -> Error {
    Error::new(
        ErrorKind::Ledger,
        "the ledger answered a different operation than was asked",
    )
}

impl<T> Job<T> {
    /// A job for an accepted entry: Queued with `attempts` made, or Running attempt
    /// `attempts` when `running` (started on publish).
    pub(crate) fn new(
        entry: Entry<T>,
        token: Token,
        attempts: u32,
        running: bool,
        core: Arc<Core>,
        slot: Option<OwnedSemaphorePermit>,
        grant: Grant,
    ) -> Self {
        let claim = Claim {
            key: entry.key.clone(),
            token,
        };
        let lost = CancellationToken::new();
        let state = if running {
            State::Running
        } else {
            State::Queued
        };
        core.registry.insert(&claim, state, lost.clone());
        Job {
            entry: Arc::new(entry),
            claim,
            attempt: attempts,
            running,
            ended: false,
            lost,
            core,
            slot,
            grant,
        }
    }

    /// Gives the job's place on the buffer back: a subscriber took it.
    pub(crate) fn leave_buffer(&mut self) {
        self.slot = None;
    }

    /// The entry being processed.
    pub fn entry(&self) -> &Entry<T> {
        &self.entry
    }

    /// The entry, shared: a cheap handle to keep past the job (the job's own
    /// [`entry`](Job::entry) is the same value).
    pub fn shared_entry(&self) -> Arc<Entry<T>> {
        self.entry.clone()
    }

    /// The entry's key.
    pub fn key(&self) -> &Key {
        &self.claim.key
    }

    /// The entry's payload.
    pub fn payload(&self) -> &T {
        &self.entry.payload
    }

    /// The lease's fencing token.
    pub fn token(&self) -> Token {
        self.claim.token
    }

    /// The current attempt, from 1 once started (0 before the first start).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the job is Running (started and not yet failed or ended).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// When the job's lease runs out by this process's monotonic clock, unless renewed
    /// before: the time the lease was asked for (granted, or last renewed by the background
    /// renewer) plus nine tenths of [`Policy::lease`](crate::Policy::lease).
    ///
    /// Past it, the ledger may have given the key to another holder (this process was paused,
    /// or could not reach the ledger to renew), so do not begin a write whose result must not
    /// be older than another holder's: release the job instead. Renewals move it later.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.core.renewals.deadline(self.grant)
    }

    /// The [`deadline`](Job::deadline) as a handle to hand to code that does not hold the job
    /// (a task that saves its output, say): it follows the background renewals as the job
    /// does, while the job holds the key (after the job ends it means nothing).
    pub fn lease_deadline(&self) -> LeaseDeadline {
        LeaseDeadline {
            renewals: self.core.renewals.clone(),
            grant: self.grant,
        }
    }

    /// Cancelled when the lease is found lost; select on `lease_lost().cancelled()` to stop.
    pub fn lease_lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Starts an attempt: Queued → Running. Subscribers hand out jobs already started; call
    /// this after [`FailOutcome::Retry`] to begin the next attempt.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LeaseLost`] if another holder took the key over; a ledger error if the
    /// ledger stayed unreachable.
    ///
    /// # Cancel safety
    ///
    /// If dropped halfway, the attempt may or may not have started in the ledger; the job
    /// itself is unchanged, and calling `start` again begins the attempt, or finds it begun,
    /// either way.
    pub async fn start(&mut self) -> Result<u32> {
        match self.core.ask(|| Ask::Start, &self.claim).await? {
            Answer::Started(Ok(s)) => {
                self.attempt = s.attempt;
                self.running = true;
                Ok(s.attempt)
            }
            // Running under this job's own token: only this job starts it, so an earlier
            // call was applied and then dropped (or its answer lost). The ledger counts one
            // attempt per start from Queued, so this is the next one.
            Answer::Started(Err(Refused::WrongState(State::Running))) if !self.running => {
                self.attempt += 1;
                self.running = true;
                self.core.registry.set(&self.claim, State::Running);
                Ok(self.attempt)
            }
            Answer::Started(Err(r)) => {
                if r == Refused::LeaseLost {
                    self.ended = true;
                }
                Err(refused(r))
            }
            _ => Err(unexpected()),
        }
    }

    /// Starts the job, waiting out transient ledger errors (a restarting server) with a
    /// growing pause; gives up on anything else (a lost lease).
    pub(crate) async fn start_patiently(&mut self) -> Result<u32> {
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match self.start().await {
                Err(e) if e.is_transient() => {
                    tracing::warn!(key = %self.key(), error = %e, "cannot start a job yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::debug!(key = %self.key(), error = %e, "a job could not start");
                    return Err(e);
                }
                ok => return ok,
            }
        }
    }

    /// Marks the key Completed: it will not be processed again (while it blocks).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LeaseLost`] if another holder took the key over (your work may have been
    /// done twice: keep it idempotent); a ledger error if the ledger stayed unreachable (the key
    /// is then offered again after its lease expires).
    ///
    /// # Cancel safety
    ///
    /// If dropped halfway, the key may or may not be Completed; if not, it is released.
    pub async fn complete(mut self) -> Result<Done> {
        let answer = self.core.ask(|| Ask::Complete, &self.claim).await;
        let out = match answer? {
            Answer::Done(r) => r.map_err(refused),
            _ => Err(unexpected()),
        };
        self.ended = out.is_ok() || matches!(&out, Err(e) if e.kind() == ErrorKind::LeaseLost);
        out
    }

    /// Completes without waiting for the ledger's answer: the queue records the completion
    /// with others in its next batch, so a worker goes on to its next job at once. For when
    /// nothing depends on the answer (a [`Pipeline`](crate::Pipeline) completes this way).
    ///
    /// The answer is still counted: a lost lease in `qupid_lease_lost_total`, a ledger error
    /// in `qupid_ledger_errors_total` (and logged). A completion the ledger did not take is
    /// not retried: the key stays Running until its lease expires, and the next poll offers
    /// it again (so the save runs again: saves must be idempotent, as always). Use
    /// [`complete`](Job::complete) to know the outcome.
    pub fn complete_later(mut self) {
        self.ended = true;
        self.core
            .send_later(super::core::Ask::Complete, self.claim.clone());
    }

    /// Records a failed attempt. While attempts remain the job comes back, still leased, for
    /// a retry; after the last one the key is Dead.
    ///
    /// # Errors
    ///
    /// As [`complete`](Job::complete).
    ///
    /// # Cancel safety
    ///
    /// If dropped halfway, the failure may or may not be recorded; the job is released.
    pub async fn fail(mut self, error: impl fmt::Display) -> Result<FailOutcome<T>> {
        let error = error.to_string();
        let answer = self
            .core
            .ask(|| Ask::Fail(error.clone()), &self.claim)
            .await;
        match answer? {
            Answer::Failed(Ok(Failed::Retry { attempts })) => {
                self.attempt = attempts;
                self.running = false;
                Ok(FailOutcome::Retry(self))
            }
            Answer::Failed(Ok(Failed::Dead { attempts })) => {
                self.ended = true;
                Ok(FailOutcome::Dead { attempts })
            }
            Answer::Failed(Err(r)) => {
                self.ended = r == Refused::LeaseLost;
                Err(refused(r))
            }
            _ => Err(unexpected()),
        }
    }

    /// Gives the key up without an ending: the record is removed and the next poll offers the
    /// key again.
    ///
    /// # Errors
    ///
    /// As [`complete`](Job::complete).
    ///
    /// # Cancel safety
    ///
    /// If dropped halfway, the release is sent again from `Drop`.
    pub async fn release(mut self) -> Result<()> {
        let answer = self.core.ask(|| Ask::Release, &self.claim).await;
        self.ended = true;
        match answer? {
            Answer::Released(r) => r.map_err(refused),
            _ => Err(unexpected()),
        }
    }

    /// Drops a started job whose lease was found lost while it waited for a subscriber,
    /// without asking the ledger anything (there is nothing left to give up).
    pub(crate) fn forget_lost(mut self) {
        tracing::debug!(key = %self.claim.key, "lease lost while buffered");
        self.ended = true;
    }

    /// The state the job believes its key is in.
    pub fn state(&self) -> State {
        if self.running {
            State::Running
        } else {
            State::Queued
        }
    }
}

impl<T> Drop for Job<T> {
    fn drop(&mut self) {
        if !self.ended {
            self.core.send_later(Ask::Release, self.claim.clone());
        }
    }
}

impl<T> fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("key", &self.claim.key)
            .field("token", &self.claim.token)
            .field("attempt", &self.attempt)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

/// When a job's lease runs out by this process's monotonic clock: a cheap handle made by
/// [`Job::lease_deadline`], that follows the background renewals as the job does, while the
/// job holds its key.
#[derive(Clone)]
pub struct LeaseDeadline {
    renewals: Arc<Renewals>,
    grant: Grant,
}

impl LeaseDeadline {
    /// The deadline now (renewals move it later); see [`Job::deadline`].
    pub fn get(&self) -> tokio::time::Instant {
        self.renewals.deadline(self.grant)
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        tokio::time::Instant::now() >= self.get()
    }
}

impl std::fmt::Debug for LeaseDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LeaseDeadline").field(&self.get()).finish()
    }
}
