//! The conformance suite and the model-based test, on the SQLite ledger: each test gets a
//! fresh file in its own temporary directory, on a manual clock.
#![cfg(feature = "sqlite")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use qupid::clock::ManualClock;
use qupid::ledger::SqliteLedger;
use qupid::Key;
use qupid_testkit::{Fixture, ManualAdvance, Plant, TestClock};
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

/// Damages rows through a connection of its own: a row with state code 9, which the
/// schema's `CHECK` keeps out unless told to ignore it (as a hand edit or another program
/// may).
struct DamageRows {
    path: PathBuf,
}

fn raw_connection(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("a raw connection to the ledger file");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("a busy timeout");
    conn
}

impl Plant for DamageRows {
    fn plant(&self, key: &Key) -> BoxFuture<'static, ()> {
        let (path, key) = (self.path.clone(), key.as_str().as_bytes().to_vec());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = raw_connection(&path);
                conn.execute_batch("PRAGMA ignore_check_constraints = ON")
                    .expect("pragma");
                conn.execute(
                    "INSERT INTO qupid_entries
                       (key, state, superseded, attempts, abandoned, token, at, version, newer, error)
                     VALUES (?1, 9, 0, 0, 0, 1, 0, NULL, NULL, NULL)
                     ON CONFLICT (key) DO UPDATE SET state = 9",
                    [key],
                )
                .expect("plant a row with state code 9");
            })
            .await
            .expect("the planting thread");
        })
    }

    fn raw(&self, key: &Key) -> BoxFuture<'static, Option<String>> {
        let (path, key) = (self.path.clone(), key.as_str().as_bytes().to_vec());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                use rusqlite::OptionalExtension;
                raw_connection(&path)
                    .query_row(
                        "SELECT concat_ws(' ', quote(state), quote(superseded), quote(attempts),
                           quote(abandoned), quote(token), quote(at), quote(version),
                           quote(newer), quote(error))
                         FROM qupid_entries WHERE key = ?1",
                        [key],
                        |r| r.get(0),
                    )
                    .optional()
                    .expect("read a row")
            })
            .await
            .expect("the reading thread")
        })
    }
}

async fn fixture() -> Fixture<SqliteLedger> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("ledger.db");
    let clock = ManualClock::new();
    let ledger = SqliteLedger::builder(&path)
        .clock(clock.clone())
        .open()
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
    .with_plant(DamageRows { path })
}

qupid_testkit::conformance_tests!(fixture);
qupid_testkit::model_test!(fixture, 128);

/// The trait's two-step `offer_and_start` ([`qupid::ledger::offer_then_start`], run by the
/// fault-injecting wrapper) passes an unreadable record's answer through.
mod two_steps {
    use qupid::ledger::SqliteLedger;
    use qupid_testkit::{FaultyLedger, Fixture};

    async fn fixture() -> Fixture<FaultyLedger<SqliteLedger>> {
        let f = super::fixture().await;
        Fixture {
            ledger: FaultyLedger::new(f.ledger),
            clock: f.clock,
            tick: f.tick,
            plant: f.plant,
            tokens_per_key: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_record_is_answered_for_its_key_alone() {
        qupid_testkit::conformance::an_unreadable_record_is_answered_for_its_key_alone(
            fixture().await,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offer_and_start_runs_accepted_keys() {
        qupid_testkit::conformance::offer_and_start_runs_accepted_keys(fixture().await).await;
    }
}
