//! Every route of the dashboard, and its bad input, over a Redis ledger, in a fresh namespace per test.

mod support;

route_tests!(support::servers::redis);
