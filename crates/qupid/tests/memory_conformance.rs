//! The conformance suite and the model-based test, on the memory ledger.

use qupid_testkit::memory_fixture;

qupid_testkit::conformance_tests!(memory_fixture);
qupid_testkit::model_test!(memory_fixture, 512);
