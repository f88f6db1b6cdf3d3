//! Time as a ledger sees it: milliseconds since the Unix epoch, from a [`Clock`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since the Unix epoch, on the ledger's clock.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub(crate) u64);

impl Timestamp {
    /// The time `ms` milliseconds after the Unix epoch.
    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `d`, saturating.
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(millis(d)))
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// The wall-clock time this stands for.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// The current wall-clock time.
    pub fn now_system() -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(millis(since))
    }
}

/// Whole milliseconds in `d`, saturating at `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A source of time for a ledger that has no clock of its own.
///
/// Server ledgers (Redis, PostgreSQL) use the server's clock so that clock skew between app
/// machines cannot break leases; the memory ledger uses a [`Clock`].
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time. Must never go backwards.
    fn now(&self) -> Timestamp;
}

/// The default clock: the wall-clock time at creation plus a monotonic elapsed time.
///
/// It never goes backwards, and it follows tokio's clock, so a test with a paused runtime
/// (`tokio::time::pause`) moves leases forward with `tokio::time::advance`.
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin: Timestamp,
    start: tokio::time::Instant,
}

impl MonotonicClock {
    /// A clock starting at the current wall-clock time.
    pub fn new() -> Self {
        MonotonicClock {
            origin: Timestamp::now_system(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Timestamp {
        self.origin.plus(self.start.elapsed())
    }
}

/// A clock that moves only when told to: for tests of leases, windows and retention.
///
/// Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use qupid::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now().since(t0), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at a fixed, arbitrary starting time.
    pub fn new() -> Self {
        ManualClock(Arc::new(AtomicU64::new(1_700_000_000_000)))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(millis(d), Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}
