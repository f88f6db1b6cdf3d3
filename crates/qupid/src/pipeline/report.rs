//! The summary of a pipeline run.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::observe::{Count, Counts};

/// What a pipeline did: returned by [`Pipeline::run`](crate::Pipeline::run), and available
/// while it runs through [`Progress`](crate::Progress).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// Entries polled from the sources and offered to the ledger (the invalid ones, counted
    /// apart, are not offered).
    pub polled: u64,
    /// Offers answered `Duplicate`: the key was in flight, completed, or dead.
    pub duplicates: u64,
    /// Of the duplicates, those whose key was in flight (Queued or Running), here or in
    /// another instance — or held by a crashed one until its lease expires. The rest
    /// ([`duplicates_finished`](Report::duplicates_finished)) were Completed or Dead.
    pub duplicates_in_flight: u64,
    /// Offers refused as outdated: the entry's [ordered version](crate::Version::ordered)
    /// was older than the newest version the ledger had accepted for its key (a stale
    /// snapshot of a record that changed since). Not processed, and not counted in
    /// [`duplicates`](Report::duplicates).
    pub outdated: u64,
    /// Offers accepted.
    pub accepted: u64,
    /// Keys completed (saved).
    pub completed: u64,
    /// Failed attempts, including the last attempt of dead keys.
    pub failed_attempts: u64,
    /// Keys that went Dead.
    pub dead: u64,
    /// Keys released without an ending (on stop); they are offered again by the next poll.
    pub released: u64,
    /// Jobs whose lease was taken over by another holder.
    pub lease_lost: u64,
    /// Attempts abandoned before their `save` began because their lease had run out by this
    /// process's clock (it was paused, or could not renew): another holder may have the key.
    /// Their keys are released and offered again.
    pub lease_expired: u64,
    /// Offers (and claims) that met a record the ledger cannot read — a foreign value in
    /// the namespace, a damaged record: that key is skipped and left untouched, logged once
    /// as an `ERROR`, and the rest of its batch goes on. `qupid remove --force KEY` repairs
    /// it.
    pub unreadable: u64,
    /// Polls that returned an error or panicked.
    pub poll_errors: u64,
    /// Entries a source handed over as errors (an invalid key or version, a row it could
    /// not read): skipped, logged once each, never holding up the rest of their batch.
    pub invalid: u64,
    /// Polled entries dropped unoffered because they were no longer fresh (see
    /// [`Source::max_snapshot_age`](crate::Source::max_snapshot_age)): the next poll offers
    /// them again.
    pub stale: u64,
    /// Ledger calls that failed (the ledger was unreachable or restarting); they are retried,
    /// and entries whose offer failed are offered again.
    pub ledger_errors: u64,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Report {
    /// The queue's counts and the pipeline's own, as a report.
    pub(crate) fn new(c: Counts, p: &PipelineCounters, elapsed: Duration) -> Self {
        Report {
            polled: c.offered,
            duplicates: c.duplicates,
            duplicates_in_flight: c.duplicates_in_flight,
            outdated: c.outdated,
            accepted: c.accepted,
            completed: c.completed,
            failed_attempts: c.failed_attempts,
            dead: c.dead,
            released: c.released,
            lease_lost: c.lease_lost,
            lease_expired: p.lease_expired.get(),
            unreadable: c.unreadable,
            poll_errors: p.poll_errors.get(),
            invalid: p.invalid.get(),
            stale: p.stale.get(),
            ledger_errors: c.ledger_errors,
            elapsed,
        }
    }

    /// Duplicates of finished keys (Completed or Dead): work already done.
    pub fn duplicates_finished(&self) -> u64 {
        self.duplicates.saturating_sub(self.duplicates_in_flight)
    }

    /// Completed keys per second over the run.
    pub fn completed_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.completed as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "polled      {:>10}", self.polled)?;
        writeln!(
            f,
            "duplicates  {:>10}  ({} finished, {} in flight)",
            self.duplicates,
            self.duplicates_finished(),
            self.duplicates_in_flight
        )?;
        writeln!(
            f,
            "outdated    {:>10}  (older than a version already accepted)",
            self.outdated
        )?;
        writeln!(f, "accepted    {:>10}", self.accepted)?;
        writeln!(f, "completed   {:>10}", self.completed)?;
        writeln!(f, "failed      {:>10}  (attempts)", self.failed_attempts)?;
        writeln!(f, "dead        {:>10}", self.dead)?;
        writeln!(f, "released    {:>10}", self.released)?;
        writeln!(f, "lease lost  {:>10}", self.lease_lost)?;
        writeln!(
            f,
            "lease exp.  {:>10}  (abandoned before save)",
            self.lease_expired
        )?;
        writeln!(
            f,
            "unreadable  {:>10}  (records the ledger cannot read)",
            self.unreadable
        )?;
        writeln!(f, "poll errors {:>10}", self.poll_errors)?;
        writeln!(f, "invalid     {:>10}", self.invalid)?;
        writeln!(f, "stale       {:>10}  (dropped unoffered)", self.stale)?;
        writeln!(f, "ledger errs {:>10}", self.ledger_errors)?;
        write!(f, "elapsed     {:>10.2?}", self.elapsed)
    }
}

/// What the pipeline counts on top of its queue's [`Counts`].
#[derive(Debug)]
pub(crate) struct PipelineCounters {
    pub(crate) lease_expired: Count,
    pub(crate) poll_errors: Count,
    pub(crate) invalid: Count,
    pub(crate) stale: Count,
}

impl PipelineCounters {
    pub(crate) fn new(queue: &str) -> Self {
        use crate::observe::names::*;
        PipelineCounters {
            lease_expired: Count::new(LEASE_EXPIRED, queue),
            poll_errors: Count::new(POLL_ERRORS, queue),
            invalid: Count::new(INVALID, queue),
            stale: Count::new(STALE, queue),
        }
    }
}
