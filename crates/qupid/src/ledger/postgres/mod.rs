//! The PostgreSQL ledger: one ledger shared by many machines, durable. Needs the `postgres`
//! feature.
//!
//! [`PostgresLedger`] keeps each key's state in a PostgreSQL (12 or later; tested on 15)
//! table. Every [`Ledger`](super::Ledger) call is **one SQL statement over the whole batch**
//! (arrays bound as parameters, `unnest`ed), so it costs one round trip, with fencing tokens
//! from a sequence and leases on the **server's** clock, so clock skew between app machines
//! cannot break leases. It implements the same state machine as every ledger (see [the
//! ledger docs](super)) and passes the same conformance suite and model-based test as
//! [`MemoryLedger`](super::MemoryLedger).
//!
//! ```no_run
//! use qupid::ledger::PostgresLedger;
//! use qupid::{Key, Ledger, Offer, Policy};
//!
//! # async fn demo() -> qupid::Result<()> {
//! let ledger = PostgresLedger::open("postgres://qupid@db.internal/app", "orders").await?;
//! let offers = [Offer::new(Key::new("orders/123")?)];
//! let outcome = ledger.offer(&Policy::default(), &offers).await?;
//! println!("{outcome:?}");
//! # Ok(())
//! # }
//! ```
//!
//! # Data layout
//!
//! A namespace (1 to 48 of `a-z`, `0-9`, `_`) is one schema, `qupid_<namespace>`, created on
//! first connect (the role needs `CREATE` on the database, or an administrator creates the
//! empty schema and grants it); a [read-only](PostgresBuilder::read_only) connect creates nothing,
//! and says there is no ledger where there is no schema. Dropping the schema (`DROP SCHEMA qupid_orders CASCADE`)
//! forgets the namespace.
//!
//! | object | holds |
//! |---|---|
//! | `meta` | one row: `schema_version`, `clock_offset_ms`, `clock_pinned_ms` |
//! | `tokens` | the sequence fencing tokens come from |
//! | `records` | one row per key: `key`, `state` (0 queued, 1 running, 2 completed, 3 dead), `token`, `at_ms` (lease expiry or finish time), `attempts`, `abandoned`, `version`, `newer` (a newer version seen in flight), `last_error`, `superseded`, and `rev`, a revision every write bumps |
//!
//! Keys, versions and errors are `bytea`, because `text` cannot hold the NUL character that a
//! key may contain; `bytea` sorts bytewise, which is the key order `list` promises.
//!
//! Indexes (schema version 1): besides the primary key, each holds the records of some states
//! only, so that the bulk of a ledger, its Completed records, is in two indexes, not three,
//! and completing a key writes two index entries:
//!
//! | index | on | holds | serves |
//! |---|---|---|---|
//! | `records_pkey` | `key` | every record | each transition's lookup of its rows; `list` of Completed records |
//! | `records_leased` | `(state, key)` | Queued and Running records (`WHERE state < 2`) | `list` and `stats` of those, and the count of expired leases |
//! | `records_dead` | `key` | Dead records (`WHERE state = 3`) | `list` and `stats` of Dead records |
//! | `records_finished` | `(state, at_ms, key)` | Completed and Dead records (`WHERE state >= 2`) | `purge` by age and by count; `stats` of Completed records |
//!
//! `list` reads a page of Queued, Running or Dead records from their index, in key order;
//! Completed records it reads from the primary key, in key order, skipping the keys of other
//! states (so a page costs time in proportion to its length plus the leased and Dead keys
//! among it). `stats` counts each state in its index, in one statement (so the counts are of
//! one moment): in proportion to the number of records in that state, so the Completed count
//! is the one that costs (tens of milliseconds per million; the planner may read the table
//! instead of the purge index when that is cheaper). Its count of expired leases reads the
//! leased rows through `records_leased` and checks each one's expiry in the table: in
//! proportion to the records in flight. Nothing else costs time in proportion to the table.
//!
//! # Statements
//!
//! `offer` is one `INSERT … SELECT … FROM unnest(…) ON CONFLICT (key) DO UPDATE … WHERE …
//! RETURNING`; `offer_and_start` is the same statement writing the rows it accepts as
//! Running with one more attempt, so a pipeline starts a key with one write; `start`,
//! `renew`, `complete` and `fail` one `UPDATE … FROM unnest(…) RETURNING`; `release`,
//! `remove` and `retry` one `DELETE … USING unnest(…) RETURNING`. Each item's row is looked
//! up through the key index, never by scanning the table, so a call costs time in proportion
//! to its batch, however large the table. Each decides on the row as the statement's
//! snapshot sees it and writes only if the row is still that one (see the `sql` module's
//! source for the shape); an item whose row another process changed in between is decided
//! again in a second statement. A batch that names a key twice is answered as if its items
//! came one after another (the second offer of a key is a duplicate of the first): each copy
//! goes in a later statement. Batches are sent sorted by key, so concurrent batches lock rows
//! in the same order and rarely deadlock; a deadlock or serialization failure (SQLSTATE
//! `40P01`, `40001`), which rolls the statement back, is retried a few times.
//!
//! # The clock, and moving it
//!
//! Leases, blocking windows and retention use the server's `clock_timestamp()` in
//! milliseconds, read once per statement, plus the namespace's `meta.clock_offset_ms`. The
//! offset is a test and operations facility: `UPDATE qupid_orders.meta SET clock_offset_ms =
//! clock_offset_ms + 60000` moves one namespace's clock a minute ahead (say, to expire every
//! lease at once after a known crash). Moving it back makes leases last longer than their
//! `lease`; qupid itself never writes it.
//!
//! If `meta.clock_pinned_ms` is not NULL, the namespace's clock *is* that value and stands
//! still: a manual clock for deterministic tests (the model-based test uses it, so that
//! records finished "at the same time" tie exactly as in the model, which is the rules). Never set it
//! in production.
//!
//! # Schema versions
//!
//! This is schema version 1. Connecting creates the schema, or upgrades one made by an older
//! qupid, step by step in one transaction under an advisory lock, never dropping data (the
//! schema keeps its version in `meta`, and each later version will be one more step). A
//! schema made by a *newer* qupid, or a schema
//! of that name holding objects qupid did not make, is refused with
//! [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) and left untouched.
//!
//! # Damaged rows
//!
//! The schema's types and `CHECK` constraint keep a row's state from 0 to 3 and every column
//! the right kind of value, but not every value one this build can read: a negative token,
//! lease time, attempt or abandoned count (left by a hand edit) makes a row unreadable. Such a
//! row is an answer for its key alone, [`Offered::Unreadable`](super::Offered::Unreadable) or
//! [`Refused::Unreadable`](super::Refused::Unreadable) (saying, for example, "a token of
//! -1"), and is never written; the statement goes on with the other keys. `remove` with
//! `force` deletes it; `get`, `list`, `retry` and `remove` without `force` fail with
//! [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) naming the key, and then change nothing.
//! The transitions compare versions as bytes and never decode them, so a version that is not
//! valid UTF-8 does not stop them: only `get` and `list`, which decode it, fail on it.
//!
//! # Failures
//!
//! A server that cannot be reached, a connection that breaks (a restart, a failover, an
//! administrator's `pg_terminate_backend`) and a server shutting down or out of connections
//! are [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) (transient: retry); broken
//! connections are dropped from the pool, and the next call opens a new one. A call that
//! fails may or may not have been applied; retrying is safe, as every transition is guarded
//! by state and token. A missing or altered table is
//! [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt); wrong credentials, a missing database
//! or missing privileges are [`ErrorKind::Config`](crate::ErrorKind::Config).
//!
//! # Scaling
//!
//! One namespace is one table that every process of a pipeline shares, so throughput is
//! bounded by one server's writes: one statement per batch and per transition, and over a
//! network a round trip each. Offers, `list` and `stats` go through indexes, so their cost
//! grows slowly with the table (measured figures: the repository's `docs/ledgers.md`).
//!
//! Past one server, split the pipeline into several namespaces by key hash (keys are
//! independent: each namespace is a complete ledger), on one server or several.
//! Partitioning `records` by hash of `key` (`PARTITION BY HASH`) spreads vacuum and index
//! maintenance, but not the server's write capacity.
//!
//! # Why `tokio-postgres` and `deadpool-postgres`
//!
//! The ledger needs a handful of fixed statements, array parameters and SQLSTATE codes: the
//! plain asynchronous driver gives exactly that, builds quickly, and needs no database at
//! compile time. `sqlx` would bring its own pool, macros and a larger build for nothing used
//! here. `deadpool-postgres` adds a small pool with a per-connection statement cache, so
//! each statement is parsed and planned once per connection.
//!
//! Connections use TLS as the URL's `sslmode` says, on rustls (see
//! [`PostgresLedger::open`]): `prefer` by default, up to `verify-full` with a
//! `sslrootcert`, as managed services want.
//!
//! # Cancel safety
//!
//! Each statement commits on its own, whole or not at all, so dropping a call's future leaves
//! each item either fully applied or not applied. A batch that needed several statements
//! (a key named twice, or a row changed concurrently) may be partly applied, each item whole.
//! `purge` deletes in chunks of at most 5,000 records so it never holds many locks for long;
//! dropping it may leave part of the purge done.

mod builder;
mod decode;
mod errors;
mod ops;
mod schema;
mod sql;
mod tls;
mod wire;

use std::fmt;
use std::sync::Arc;

use deadpool_postgres::Pool;

pub use self::builder::PostgresBuilder;
use self::sql::Sql;

/// A [`Ledger`](super::Ledger) kept in PostgreSQL, for pipelines spread over many machines.
///
/// Open one with [`PostgresLedger::open`] or [`PostgresLedger::builder`]. Cloning is
/// cheap: clones share one connection pool. See the [module docs](self) for the data layout,
/// the clock and failures.
#[derive(Clone)]
pub struct PostgresLedger {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    sql: Sql,
    namespace: String,
    /// The URL with any password hidden, for messages.
    url: String,
    /// Opened with [`PostgresBuilder::read_only`]: every write method refuses.
    read_only: bool,
}

impl PostgresLedger {
    /// The namespace this ledger works in.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The PostgreSQL schema holding the namespace (`qupid_<namespace>`).
    pub fn schema(&self) -> String {
        schema::schema_name(&self.inner.namespace)
    }

    /// Whether the ledger was opened [read-only](PostgresBuilder::read_only): its write methods
    /// answer [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }
}

impl fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLedger")
            .field("url", &self.inner.url)
            .field("namespace", &self.inner.namespace)
            .field("pool_size", &self.inner.pool.status().max_size)
            .field("read_only", &self.inner.read_only)
            .finish_non_exhaustive()
    }
}
