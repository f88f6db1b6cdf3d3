//! What user code receives: one attempt at one entry.

use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::key::{Entry, Key, Version};
use crate::ledger::Token;
use crate::queue::core::{Grant, Renewals};
use crate::queue::Job;

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
    renewals: Arc<Renewals>,
    grant: Grant,
}

impl<T> Attempt<T> {
    /// The attempt `job` is making now.
    pub(crate) fn of(job: &Job<T>) -> Self {
        let (renewals, grant) = job.lease_clock();
        Attempt {
            entry: job.shared_entry(),
            token: job.token(),
            number: job.attempt(),
            lost: job.lease_lost().clone(),
            renewals,
            grant,
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
        self.renewals.deadline(self.grant)
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
            renewals: self.renewals.clone(),
            grant: self.grant,
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
