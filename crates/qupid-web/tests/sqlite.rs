//! Every route of the dashboard, and its bad input, over a SQLite ledger, in a fresh file per test.

mod support;

route_tests!(support::servers::sqlite);
