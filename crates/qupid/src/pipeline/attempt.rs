//! What user code receives: one attempt at one entry.

use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::key::{Entry, Key, Version};
use crate::ledger::Token;
use crate::queue::{Job, LeaseDeadline};

/// One attempt at processing one entry, handed to the pipeline's `process` and `save` steps.
///
/// Cloning is cheap (the entry is shared). Use [`token`](Attempt::token) to make a save
/// conditional ("write only if my token is the newest"), and
/// [`lease_lost`](Attempt::lease_lost) to notice that another holder took the key over.
pub struct Attempt<T> {
    entry: Arc<Entry<T>>,
    token: Token,
    number: u32,
    lost: CancellationToken,
    deadline: LeaseDeadline,
}

impl<T> Attempt<T> {
    /// The attempt `job` is making now (built from the job's public API, as a loop of your
    /// own over a [`Queue`](crate::Queue) can build one).
    pub fn of(job: &Job<T>) -> Self {
        Attempt {
            entry: job.shared_entry(),
            token: job.token(),
            number: job.attempt(),
            lost: job.lease_lost().clone(),
            deadline: job.lease_deadline(),
        }
    }

    /// The entry.
    pub fn entry(&self) -> &Entry<T> {
        &self.entry
    }

    /// The entry's key.
    pub fn key(&self) -> &Key {
        &self.entry.key
    }

    /// The entry's version, if it has one.
    pub fn version(&self) -> Option<&Version> {
        self.entry.version.as_ref()
    }

    /// The entry's payload.
    pub fn payload(&self) -> &T {
        &self.entry.payload
    }

    /// The fencing token of the lease this attempt runs under.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Which attempt this is, from 1.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// When this attempt's lease runs out by this process's monotonic clock, unless renewed
    /// before (renewals, in the background, move it later); see [`Job::deadline`].
    ///
    /// The pipeline does not begin `save` past it: the attempt is abandoned, its key released
    /// and counted in [`Report::lease_expired`](crate::Report::lease_expired), since another
    /// holder may have taken the key over meanwhile (this process was paused, or could not
    /// renew). A `save` that takes long can check it again before its final write; only a
    /// write conditional on the [`token`](Attempt::token) closes the window entirely.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline.get()
    }

    /// Whether the [`deadline`](Attempt::deadline) has passed.
    pub fn is_expired(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline()
    }

    /// Cancelled if the lease is found lost; the pipeline then abandons this attempt.
    pub fn lease_lost(&self) -> &CancellationToken {
        &self.lost
    }
}

impl<T> Clone for Attempt<T> {
    fn clone(&self) -> Self {
        Attempt {
            entry: self.entry.clone(),
            token: self.token,
            number: self.number,
            lost: self.lost.clone(),
            deadline: self.deadline.clone(),
        }
    }
}

impl<T> fmt::Debug for Attempt<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt")
            .field("key", &self.entry.key)
            .field("token", &self.token)
            .field("number", &self.number)
            .finish_non_exhaustive()
    }
}
