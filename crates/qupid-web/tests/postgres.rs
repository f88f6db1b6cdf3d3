//! Every route of the dashboard, and its bad input, over a PostgreSQL ledger, in a fresh namespace (schema) per test.

mod support;

route_tests!(support::servers::postgres);
