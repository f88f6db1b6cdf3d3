//! Fixtures: a fresh ledger and a handle on its clock.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use qupid::clock::ManualClock;
use qupid::{Ledger, MemoryLedger, Policy};

/// Moves a ledger's clock forward.
pub trait TestClock: Send + Sync + 'static {
    /// Moves the ledger's clock forward by at least `by`.
    fn advance(&self, by: Duration) -> BoxFuture<'static, ()>;
}

/// Advances a [`ManualClock`] instantly.
#[derive(Debug, Clone)]
pub struct ManualAdvance(pub ManualClock);

impl TestClock for ManualAdvance {
    fn advance(&self, by: Duration) -> BoxFuture<'static, ()> {
        self.0.advance(by);
        Box::pin(async {})
    }
}

/// Advances a real clock by sleeping: for ledgers that use a server's clock.
#[derive(Debug, Clone, Copy)]
pub struct SleepAdvance;

impl TestClock for SleepAdvance {
    fn advance(&self, by: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(by))
    }
}

/// A fresh, empty ledger for one test, with its clock.
pub struct Fixture<L> {
    /// The ledger under test, in a namespace no other test uses.
    pub ledger: L,
    /// Moves the ledger's clock.
    pub clock: Arc<dyn TestClock>,
    /// The unit of time of the tests: leases are 10 ticks, windows a few ticks.
    pub tick: Duration,
}

impl<L: Ledger> Fixture<L> {
    /// A fixture of `ledger`, whose clock `clock` moves, with `tick` as the unit of time.
    pub fn new(ledger: L, clock: impl TestClock, tick: Duration) -> Self {
        Fixture {
            ledger,
            clock: Arc::new(clock),
            tick,
        }
    }

    /// `n` ticks.
    pub fn ticks(&self, n: u32) -> Duration {
        self.tick * n
    }

    /// Moves the clock forward by `n` ticks.
    pub async fn advance(&self, n: u32) {
        self.clock.advance(self.ticks(n)).await;
    }

    /// The default policy with a lease of 10 ticks.
    pub fn policy(&self) -> Policy {
        let mut p = Policy::default();
        p.lease = self.ticks(10);
        p
    }
}

impl<L: fmt::Debug> fmt::Debug for Fixture<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture")
            .field("ledger", &self.ledger)
            .field("tick", &self.tick)
            .finish()
    }
}

/// A fixture of a fresh [`MemoryLedger`] on a [`ManualClock`], one virtual second per tick.
pub async fn memory_fixture() -> Fixture<MemoryLedger> {
    let clock = ManualClock::new();
    Fixture::new(
        MemoryLedger::with_clock(clock.clone()),
        ManualAdvance(clock),
        Duration::from_secs(1),
    )
}
