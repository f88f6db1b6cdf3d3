//! De-duplicated **poll → process → save** pipelines: each record processed once.
//!
//! Apps poll sources (a database, external APIs) for records that need work, process them
//! concurrently, and save the output somewhere with no transactions (object storage, another
//! API, files). The same records keep showing up until they are saved, and several instances
//! may poll at once. qupid de-duplicates by key, leases what is in flight, records what is
//! done, and lets you remove, retry, purge and stop — in plain code you can read and test.
//!
//! ```
//! use std::time::Duration;
//! use qupid::{Entry, MemoryLedger, Pipeline, Source};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qupid::Result<()> {
//! // A source that keeps returning the same records until they are saved. Each record
//! // becomes an entry on its own: one with an invalid key is skipped and counted, never
//! // holding up the others.
//! let source = Source::poll(Duration::from_millis(10), || async {
//!     let records = vec![("orders/1", 10), ("orders/2", 20), ("orders/3", 30)];
//!     Ok::<_, std::io::Error>(records.into_iter().map(|(k, v)| Entry::new(k, v)))
//! });
//!
//! let report = Pipeline::builder(MemoryLedger::new())
//!     .source(source)
//!     .process(|attempt| async move {
//!         // Turn the record into output. Errors and panics fail this attempt only.
//!         Ok::<_, std::io::Error>(format!("{} = {}", attempt.key(), attempt.payload()))
//!     })
//!     .save(|_attempt, output: String| async move {
//!         // Store it somewhere. The key is completed only if this succeeds.
//!         println!("saved {output}");
//!         Ok::<_, std::io::Error>(())
//!     })
//!     .concurrency(8)
//!     .stop_when_idle()
//!     .build()?
//!     .run()
//!     .await?;
//!
//! assert_eq!(report.completed, 3);
//! # Ok(())
//! # }
//! ```
//!
//! # Concepts
//!
//! - A **key** ([`Key`]) is a record's identity; a **version** ([`Version`]) its content
//!   fingerprint; an **entry** ([`Entry`]) is key + version + your payload.
//! - The **ledger** ([`Ledger`]) stores each key's [`State`] — never payloads. Every ledger
//!   implements the same state machine (see [`ledger`]) and passes one conformance suite.
//! - A **lease** is a claim on a key with an expiry and a fencing [`Token`](ledger::Token).
//!   Jobs renew theirs in the background; a lease that expires (a crash, a hang) lets the next
//!   offer of the key through, and the old holder is fenced out.
//! - The **policy** ([`Policy`]) says what blocks a duplicate (Completed and Dead, forever, by
//!   default), how long records are kept, how many attempts a key gets, and the crash cap.
//! - The **queue** ([`Queue`]) is the low level: publish entries, subscribe to [`Job`]s. The
//!   **pipeline** ([`Pipeline`]) is the high level: sources → process → save, with
//!   concurrency, timeouts, retries with backoff, panic isolation, graceful stop and a
//!   [`Report`].
//!
//! # Delivery guarantees
//!
//! **At least once, never twice while a lease is valid.** Of any number of offers of a key,
//! from any number of processes sharing a ledger, only one is accepted until that lease ends.
//! But a process can crash (or lose its lease) after its `save` succeeded and before the
//! completion was recorded; the key is then processed again. **Your `save` must be
//! idempotent** — write to a name derived from the key, or make the write conditional on the
//! fencing token ([`Attempt::token`]). For object storage, `sink::ObjectSink` (feature
//! `object-store`) is such a write: a compare-and-swap that never replaces newer output with
//! older, even when a paused holder's write arrives late.
//!
//! Nothing is lost: every accepted key ends Completed, Dead, released (and so offered again by
//! the next poll), or becomes offerable again when its lease expires.
//!
//! # Ledgers and features
//!
//! | ledger | feature | for |
//! |---|---|---|
//! | [`MemoryLedger`] | (always) | one process; fastest; forgets on exit |
//! | `SqliteLedger` (`ledger::sqlite`) | `sqlite` | one machine; survives restarts and `kill -9`; WAL + group commit |
//! | `RedisLedger` (`ledger::redis`) | `redis` | many machines; one Lua script per batch; leases on the server's clock |
//! | `PostgresLedger` (`ledger::postgres`) | `postgres` | many machines, durable; one statement per batch; leases on the database's clock |
//! | [`AnyLedger`] | (always) | whichever of the above a URL names, chosen at run time |
//!
//! Each backend is a cargo feature, so a build that wants only memory compiles nothing else;
//! `full` turns on every ledger.
//!
//! | feature | what it adds |
//! |---|---|
//! | `sqlite`, `redis`, `postgres` | the ledgers above |
//! | `full` | every ledger |
//! | `object-store` | `sink::ObjectSink`: saves to S3 (or any `object_store` backend) that never replace newer output with older — a compare-and-swap on the ETag, the version and fencing token in the object's metadata. Builds `object_store` without backends: enable yours (`aws`, `gcp`, `azure`) in your own dependency on it |
//!
//! The `qupid-testkit` crate holds the conformance suite and the model-based test that every
//! ledger runs.
//!
//! # Observability
//!
//! `tracing` spans per poll and per entry, counters and gauges through the `metrics` crate
//! (names in [`observe`]), [`LedgerAdmin::stats`] on every ledger, and a live [`Progress`].
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod clock;
mod error;
mod key;
pub mod ledger;
pub mod observe;
pub mod pipeline;
mod policy;
pub mod queue;
mod redact;
#[cfg(feature = "object-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
pub mod sink;

pub use error::{BoxError, Error, ErrorKind, Result};
pub use key::{Entry, Key, Offer, Version, MAX_KEY_LEN};
#[cfg(feature = "postgres")]
pub use ledger::PostgresLedger;
#[cfg(feature = "redis")]
pub use ledger::RedisLedger;
#[cfg(feature = "sqlite")]
pub use ledger::SqliteLedger;
pub use ledger::{AnyLedger, Ledger, LedgerAdmin, MemoryLedger, State};
pub use pipeline::{
    Attempt, Backoff, Pipeline, PipelineBuilder, Progress, Report, Source, SourceItem,
};
pub use policy::{Blocking, Keep, NewerVersions, Policy, Retention};
pub use queue::{Job, Published, Queue};
pub use redact::redact_url;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
