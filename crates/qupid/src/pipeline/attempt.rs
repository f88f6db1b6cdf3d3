//! What user code receives: one attempt at one entry.

use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::key::{Entry, Key, Version};
use crate::ledger::Token;

/// One attempt at processing one entry, handed to the pipeline's `process` and `save` steps.
///
/// Cloning is cheap (the entry is shared). Use [`token`](Attempt::token) to make a save
/// conditional ("write only if my token is the newest"), and
/// [`lease_lost`](Attempt::lease_lost) to notice that another holder took the key over.
pub struct Attempt<T> {
    pub(crate) entry: Arc<Entry<T>>,
    pub(crate) token: Token,
    pub(crate) number: u32,
    pub(crate) lost: CancellationToken,
}

impl<T> Attempt<T> {
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
