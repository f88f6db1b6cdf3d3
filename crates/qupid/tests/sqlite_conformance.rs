//! The conformance suite and the model-based test, on the SQLite ledger: each test gets a
//! fresh file in its own temporary directory, on a manual clock.
#![cfg(feature = "sqlite")]

use std::time::Duration;

use futures::future::BoxFuture;
use qupid::clock::ManualClock;
use qupid::ledger::SqliteLedger;
use qupid_testkit::{Fixture, ManualAdvance, TestClock};
use tempfile::TempDir;

/// The fixture's clock, which also keeps the ledger's directory alive for as long as the
/// fixture (it is dropped after the ledger, so the file is closed before it is deleted).
struct ClockAndDir {
    clock: ManualAdvance,
    _dir: TempDir,
}

impl TestClock for ClockAndDir {
    fn advance(&self, by: Duration) -> BoxFuture<'static, ()> {
        self.clock.advance(by)
    }
}

async fn fixture() -> Fixture<SqliteLedger> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = ManualClock::new();
    let ledger = SqliteLedger::builder(dir.path().join("ledger.db"))
        .clock(clock.clone())
        .build()
        .await
        .expect("a fresh ledger file opens");
    Fixture::new(
        ledger,
        ClockAndDir {
            clock: ManualAdvance(clock),
            _dir: dir,
        },
        Duration::from_secs(1),
    )
}

qupid_testkit::conformance_tests!(fixture);
qupid_testkit::model_test!(fixture, 128);
