//! The conformance suite and the model-based test, on the memory ledger, and on a wrapper that
//! runs `Ledger::offer_and_start` as the trait's two-step default (`offer_then_start`).

use qupid_testkit::memory_fixture;

qupid_testkit::conformance_tests!(memory_fixture);
qupid_testkit::model_test!(memory_fixture, 512);

mod two_step_offer_and_start {
    use qupid::MemoryLedger;
    use qupid_testkit::{memory_fixture, FaultyLedger, Fixture};

    async fn fixture() -> Fixture<FaultyLedger<MemoryLedger>> {
        let f = memory_fixture().await;
        Fixture {
            ledger: FaultyLedger::new(f.ledger),
            clock: f.clock,
            tick: f.tick,
            plant: f.plant,
            tokens_per_key: false,
        }
    }

    qupid_testkit::conformance_tests!(fixture);
    qupid_testkit::model_test!(fixture, 128);
}
