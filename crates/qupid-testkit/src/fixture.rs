//! Fixtures: a fresh ledger and a handle on its clock.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use qupid::clock::ManualClock;
use qupid::{Key, LedgerAdmin, MemoryLedger, Policy};

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

/// Reaches under a ledger's API into its store, to put there what the ledger cannot read: a
/// foreign value in its namespace, or a damaged record. The conformance tests of unreadable
/// records (see [the ledger docs](qupid::ledger#unreadable-records)) use it.
///
/// Each ledger damages its store its own way: a Redis fixture writes a list where a record
/// string belongs, a SQLite one a row with a state code outside 0 to 3, a PostgreSQL one a
/// row with a negative token (its `CHECK` constraint keeps the state valid).
pub trait Plant: Send + Sync + 'static {
    /// Writes under `key` something the ledger cannot read, replacing the key's record if it
    /// has one.
    fn plant(&self, key: &Key) -> BoxFuture<'static, ()>;

    /// What the store holds under `key`, raw, as text (`None` if nothing): the tests compare
    /// it before and after calls that must leave a planted key untouched, so it should show
    /// everything the ledger keeps for the key (the record, and its index entries where the
    /// ledger has indexes of its own).
    fn raw(&self, key: &Key) -> BoxFuture<'static, Option<String>>;
}

/// A fresh, empty ledger for one test, with its clock.
pub struct Fixture<L> {
    /// The ledger under test, in a namespace no other test uses.
    pub ledger: L,
    /// Moves the ledger's clock.
    pub clock: Arc<dyn TestClock>,
    /// The unit of time of the tests: leases are 10 ticks, windows a few ticks.
    pub tick: Duration,
    /// Plants unreadable records in the ledger's store; `None` for a ledger that cannot
    /// hold one (the memory ledger), whose tests of unreadable records are then skipped
    /// with a note. Set it with [`with_plant`](Fixture::with_plant).
    pub plant: Option<Arc<dyn Plant>>,
    /// Whether the ledger's fencing tokens grow per key only: distinct across the namespace,
    /// but not drawn in one order across keys (a Redis namespace split into shards, each
    /// drawing its own). The tests then compare tokens of one key only, and check that
    /// tokens of different keys differ. Set it with
    /// [`with_tokens_per_key`](Fixture::with_tokens_per_key).
    pub tokens_per_key: bool,
}

impl<L: LedgerAdmin> Fixture<L> {
    /// A fixture of `ledger`, whose clock `clock` moves, with `tick` as the unit of time.
    pub fn new(ledger: L, clock: impl TestClock, tick: Duration) -> Self {
        Fixture {
            ledger,
            clock: Arc::new(clock),
            tick,
            plant: None,
            tokens_per_key: false,
        }
    }

    /// The same fixture, for a ledger whose tokens grow per key only (see
    /// [`tokens_per_key`](Fixture::tokens_per_key)).
    pub fn with_tokens_per_key(mut self) -> Self {
        self.tokens_per_key = true;
        self
    }

    /// The same fixture, able to plant unreadable records with `plant`.
    pub fn with_plant(mut self, plant: impl Plant) -> Self {
        self.plant = Some(Arc::new(plant));
        self
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
            .field("plant", &self.plant.is_some())
            .field("tokens_per_key", &self.tokens_per_key)
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
