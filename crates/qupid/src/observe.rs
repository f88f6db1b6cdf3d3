//! Observability: the metrics qupid records, and the counters behind a [`Report`].
//!
//! Counters and gauges go through the [`metrics`](https://docs.rs/metrics) crate, so they
//! reach whatever recorder the application installs (Prometheus, StatsD, ...); with no
//! recorder they cost nothing. Every metric carries the label `queue` (the pipeline's name).
//!
//! | name | kind | counts |
//! |---|---|---|
//! | `qupid_offered_total` | counter | keys offered to the ledger (every polled entry) |
//! | `qupid_duplicates_total` | counter | offers answered `Duplicate` |
//! | `qupid_duplicates_in_flight_total` | counter | of those, offers that found the key leased (in flight here or in another instance) |
//! | `qupid_outdated_total` | counter | offers refused as outdated: an ordered version older than one the ledger accepted for the key (not counted as duplicates) |
//! | `qupid_accepted_total` | counter | offers accepted |
//! | `qupid_completed_total` | counter | keys completed |
//! | `qupid_failed_total` | counter | failed attempts (including the last one) |
//! | `qupid_dead_total` | counter | keys that went Dead |
//! | `qupid_released_total` | counter | keys released without an ending (stop, dropped job) |
//! | `qupid_lease_lost_total` | counter | jobs that found their lease taken over |
//! | `qupid_lease_expired_total` | counter | attempts abandoned before their save because their lease ran out by this process's clock |
//! | `qupid_poll_errors_total` | counter | polls that returned an error or panicked |
//! | `qupid_stale_total` | counter | polled entries dropped unoffered, too old to offer (see `Source::max_snapshot_age`) |
//! | `qupid_unreadable_total` | counter | offers and claims that met a record the ledger cannot read (a foreign value, a damaged record): answered for that key alone |
//! | `qupid_invalid_total` | counter | entries a source handed over as errors (an invalid key or version): skipped |
//! | `qupid_ledger_errors_total` | counter | ledger calls that failed (unreachable, restarting); retried |
//! | `qupid_queued` | gauge | accepted keys this process holds that are not running |
//! | `qupid_running` | gauge | attempts running in this process |
//!
//! Tracing: a `qupid.poll` span per poll (fields `source`, `entries`, `accepted`), a
//! `qupid.job` span per entry (fields `key`, `token`), and events for failures (`WARN`),
//! dead keys (`ERROR`) and lost leases (`WARN`).
//!
//! [`Report`]: crate::Report

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use metrics::{Counter, Gauge};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::key::Key;
use crate::ledger::Unreadable;

/// Metric names, as constants.
pub mod names {
    /// Keys offered to the ledger.
    pub const OFFERED: &str = "qupid_offered_total";
    /// Offers answered `Duplicate`.
    pub const DUPLICATES: &str = "qupid_duplicates_total";
    /// Offers answered `Duplicate` because the key is leased (Queued or Running), here or in
    /// another instance: a subset of [`DUPLICATES`].
    pub const DUPLICATES_IN_FLIGHT: &str = "qupid_duplicates_in_flight_total";
    /// Offers refused as outdated (an ordered version older than one accepted for the key).
    pub const OUTDATED: &str = "qupid_outdated_total";
    /// Offers accepted.
    pub const ACCEPTED: &str = "qupid_accepted_total";
    /// Keys completed.
    pub const COMPLETED: &str = "qupid_completed_total";
    /// Failed attempts.
    pub const FAILED: &str = "qupid_failed_total";
    /// Keys that went Dead.
    pub const DEAD: &str = "qupid_dead_total";
    /// Keys released without an ending.
    pub const RELEASED: &str = "qupid_released_total";
    /// Jobs whose lease was taken over.
    pub const LEASE_LOST: &str = "qupid_lease_lost_total";
    /// Attempts abandoned before their save: the lease ran out by this process's clock.
    pub const LEASE_EXPIRED: &str = "qupid_lease_expired_total";
    /// Polls that failed.
    pub const POLL_ERRORS: &str = "qupid_poll_errors_total";
    /// Polled entries dropped unoffered: too old to offer.
    pub const STALE: &str = "qupid_stale_total";
    /// Offers and claims that met a record the ledger cannot read.
    pub const UNREADABLE: &str = "qupid_unreadable_total";
    /// Entries a source handed over as errors, skipped.
    pub const INVALID: &str = "qupid_invalid_total";
    /// Ledger calls that failed.
    pub const LEDGER_ERRORS: &str = "qupid_ledger_errors_total";
    /// Accepted keys held and not running.
    pub const QUEUED: &str = "qupid_queued";
    /// Attempts running (including, for a queue that starts on publish, accepted entries
    /// waiting for a worker).
    pub const RUNNING: &str = "qupid_running";
}

/// One counter: an atomic for the report, a `metrics` handle for the recorder.
#[derive(Debug)]
pub(crate) struct Count {
    n: AtomicU64,
    m: Counter,
}

impl Count {
    pub(crate) fn new(name: &'static str, queue: &str) -> Self {
        Count {
            n: AtomicU64::new(0),
            m: metrics::counter!(name, "queue" => queue.to_owned()),
        }
    }

    pub(crate) fn add(&self, n: u64) {
        if n > 0 {
            self.n.fetch_add(n, Relaxed);
            self.m.increment(n);
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.n.load(Relaxed)
    }
}

/// A gauge kept as a signed atomic so it can be read back.
#[derive(Debug)]
pub(crate) struct Level {
    n: std::sync::atomic::AtomicI64,
    m: Gauge,
}

impl Level {
    fn new(name: &'static str, queue: &str) -> Self {
        Level {
            n: Default::default(),
            m: metrics::gauge!(name, "queue" => queue.to_owned()),
        }
    }

    pub(crate) fn add(&self, d: i64) {
        let now = self.n.fetch_add(d, Relaxed) + d;
        self.m.set(now as f64);
    }

    pub(crate) fn get(&self) -> i64 {
        self.n.load(Relaxed)
    }
}

/// Every counter and gauge of one [`Queue`](crate::Queue), and whether its ledger answers.
///
/// A queue makes its own, or takes one made beforehand ([`QueueBuilder::counters`]), so that
/// something can watch a queue that does not exist yet (a progress line built before the
/// run). Every ledger call the queue makes reports here: [`counts`](Counters::counts) reads
/// the counts, [`ledger_outage`](Counters::ledger_outage) and
/// [`ledger_failure`](Counters::ledger_failure) the ledger's health. Each counter is also a
/// [metric](self), labelled with the queue's name.
///
/// ```
/// use std::sync::Arc;
/// use qupid::observe::Counters;
/// use qupid::{Entry, MemoryLedger, Queue};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> qupid::Result<()> {
/// let counters = Arc::new(Counters::new("orders"));
/// let queue = Queue::builder(MemoryLedger::new())
///     .name("orders")
///     .counters(counters.clone())
///     .build()?;
/// queue.publish(Entry::new("orders/1", ())?).await?;
/// queue.publish(Entry::new("orders/1", ())?).await?;
/// let counts = counters.counts();
/// assert_eq!((counts.offered, counts.accepted, counts.duplicates), (2, 1, 1));
/// # Ok(())
/// # }
/// ```
///
/// [`QueueBuilder::counters`]: crate::queue::QueueBuilder::counters
#[derive(Debug)]
pub struct Counters {
    pub(crate) offered: Count,
    pub(crate) duplicates: Count,
    pub(crate) in_flight: Count,
    pub(crate) outdated: Count,
    pub(crate) accepted: Count,
    pub(crate) completed: Count,
    pub(crate) failed: Count,
    pub(crate) dead: Count,
    pub(crate) released: Count,
    pub(crate) lease_lost: Count,
    unreadable: Count,
    /// Keys whose unreadable record was logged: each is logged once.
    unreadable_logged: LogOnce,
    pub(crate) ledger_errors: Count,
    pub(crate) queued: Level,
    pub(crate) running: Level,
    pub(crate) ledger: Health,
}

impl Counters {
    /// Counters for the queue named `queue` (the `queue` label of the metrics), all zero.
    pub fn new(queue: &str) -> Self {
        use names::*;
        Counters {
            offered: Count::new(OFFERED, queue),
            duplicates: Count::new(DUPLICATES, queue),
            in_flight: Count::new(DUPLICATES_IN_FLIGHT, queue),
            outdated: Count::new(OUTDATED, queue),
            accepted: Count::new(ACCEPTED, queue),
            completed: Count::new(COMPLETED, queue),
            failed: Count::new(FAILED, queue),
            dead: Count::new(DEAD, queue),
            released: Count::new(RELEASED, queue),
            lease_lost: Count::new(LEASE_LOST, queue),
            unreadable: Count::new(UNREADABLE, queue),
            unreadable_logged: LogOnce::default(),
            ledger_errors: Count::new(LEDGER_ERRORS, queue),
            queued: Level::new(QUEUED, queue),
            running: Level::new(RUNNING, queue),
            ledger: Health::default(),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        Counts {
            offered: self.offered.get(),
            duplicates: self.duplicates.get(),
            duplicates_in_flight: self.in_flight.get(),
            outdated: self.outdated.get(),
            accepted: self.accepted.get(),
            completed: self.completed.get(),
            failed_attempts: self.failed.get(),
            dead: self.dead.get(),
            released: self.released.get(),
            lease_lost: self.lease_lost.get(),
            unreadable: self.unreadable.get(),
            ledger_errors: self.ledger_errors.get(),
            queued: u64::try_from(self.queued.get()).unwrap_or(0),
            running: u64::try_from(self.running.get()).unwrap_or(0),
        }
    }

    /// While the ledger is unavailable (its calls fail with errors worth retrying): how long
    /// it has been so, and its last error. `None` while it answers.
    pub fn ledger_outage(&self) -> Option<(Duration, Error)> {
        self.ledger.outage()
    }

    /// The first ledger error that retrying cannot fix (corrupt data, a newer schema,
    /// permission denied), if one was met. A queue keeps working after it; a
    /// [`Pipeline`](crate::Pipeline) stops with it.
    pub fn ledger_failure(&self) -> Option<Error> {
        self.ledger.fatal()
    }

    /// Waits for a ledger error that retrying cannot fix, and answers it (at once if one was
    /// already met).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn ledger_failed(&self) -> Error {
        loop {
            let reported = self.ledger.fatal_reported();
            tokio::pin!(reported);
            reported.as_mut().enable();
            if let Some(e) = self.ledger.fatal() {
                return e;
            }
            reported.await;
        }
    }

    /// Records the outcome of a ledger call made on the queue's behalf outside the queue
    /// (a purge, say), so that its failures count like the queue's own.
    pub(crate) fn ledger_call<T>(&self, out: &Result<T>) {
        match out {
            Ok(_) => self.ledger.ok(),
            Err(e) => {
                self.ledger_errors.add(1);
                self.ledger.failed(e);
            }
        }
    }

    /// Counts an unreadable record met under `key`, and logs it the first time.
    pub(crate) fn unreadable(&self, key: &Key, u: &Unreadable) {
        self.unreadable.add(1);
        if self.unreadable_logged.first(key.as_str()) {
            tracing::error!(
                key = %crate::key::excerpt(key.as_str()),
                found = u.found(),
                "the ledger holds a record it cannot read under this key: the key is skipped \
                 and left untouched (`qupid remove --force KEY` deletes what is there)"
            );
        }
    }
}

/// What a queue's [`Counters`] counted so far. The pipeline's [`Report`] adds its own.
///
/// [`Report`]: crate::Report
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Keys offered to the ledger.
    pub offered: u64,
    /// Offers answered `Duplicate`.
    pub duplicates: u64,
    /// Of those, offers that found the key leased (in flight here or in another instance).
    pub duplicates_in_flight: u64,
    /// Offers refused as outdated.
    pub outdated: u64,
    /// Offers accepted.
    pub accepted: u64,
    /// Keys completed.
    pub completed: u64,
    /// Failed attempts (including the last one of a key that went Dead).
    pub failed_attempts: u64,
    /// Keys that went Dead.
    pub dead: u64,
    /// Keys released without an ending.
    pub released: u64,
    /// Jobs that found their lease taken over.
    pub lease_lost: u64,
    /// Offers and claims that met a record the ledger cannot read.
    pub unreadable: u64,
    /// Ledger calls that failed.
    pub ledger_errors: u64,
    /// Accepted keys held and not running, now.
    pub queued: u64,
    /// Attempts running, now.
    pub running: u64,
}

/// Remembers what was logged, so that something met at every poll is logged once. Bounded:
/// past [`LogOnce::REMEMBERED`] distinct things it starts over (and logs them again).
#[derive(Debug, Default)]
pub(crate) struct LogOnce {
    seen: Mutex<std::collections::HashSet<String>>,
}

impl LogOnce {
    const REMEMBERED: usize = 4096;

    /// Whether `what` is met for the first time.
    pub(crate) fn first(&self, what: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(what) {
            return false;
        }
        if seen.len() >= Self::REMEMBERED {
            seen.clear();
        }
        seen.insert(what.to_owned())
    }
}

/// Whether the ledger answers: every ledger call of a queue reports here. A transient failure
/// starts (or continues) an outage, which the next success ends; any other failure is fatal,
/// and the first one is kept for the pipeline to stop with.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Set while an outage lasts: a success then takes the lock to end it.
    down: AtomicBool,
    state: Mutex<HealthState>,
    fatal: Notify,
}

#[derive(Debug, Default)]
struct HealthState {
    down_since: Option<Instant>,
    last: Option<Error>,
    fatal: Option<Error>,
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ledger call succeeded.
    pub(crate) fn ok(&self) {
        if self.down.load(Relaxed) {
            self.down.store(false, Relaxed);
            let mut s = self.state();
            s.down_since = None;
            s.last = None;
        }
    }

    /// A ledger call failed with `e`.
    pub(crate) fn failed(&self, e: &Error) {
        let mut s = self.state();
        if e.is_transient() {
            s.down_since.get_or_insert_with(Instant::now);
            s.last = Some(e.share());
            self.down.store(true, Relaxed);
        } else if s.fatal.is_none() {
            s.fatal = Some(e.share());
            drop(s);
            self.fatal.notify_waiters();
        }
    }

    /// How long the ledger has been failing transiently, and its last error, while it is.
    pub(crate) fn outage(&self) -> Option<(Duration, Error)> {
        if !self.down.load(Relaxed) {
            return None;
        }
        let s = self.state();
        let since = s.down_since?;
        Some((since.elapsed(), s.last.as_ref()?.share()))
    }

    /// The first error that retrying cannot fix, if there was one.
    pub(crate) fn fatal(&self) -> Option<Error> {
        self.state().fatal.as_ref().map(Error::share)
    }

    /// Resolves when a fatal error is reported (register before checking [`fatal`]).
    ///
    /// [`fatal`]: Health::fatal
    pub(crate) fn fatal_reported(&self) -> tokio::sync::futures::Notified<'_> {
        self.fatal.notified()
    }
}
