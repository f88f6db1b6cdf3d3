//! Every route of the dashboard, and its bad input, over a memory ledger (in this process, as an app would watch its own).

mod support;

route_tests!(support::servers::memory);
