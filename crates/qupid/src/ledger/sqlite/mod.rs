//! The SQLite ledger: durable on one machine, in one file. Needs the `sqlite` feature.
//!
//! [`SqliteLedger`] keeps each key's state in a SQLite file, so completed keys stay completed
//! across restarts and crashes, attempts and abandoned counts survive (a poison record still
//! reaches Dead), and fencing tokens keep growing. It implements the same state machine as
//! every ledger (see [the ledger docs](super)) and passes the same conformance suite and
//! model-based test as [`MemoryLedger`](super::MemoryLedger).
//!
//! ```
//! use qupid::ledger::sqlite::SqliteLedger;
//! use qupid::ledger::Offered;
//! use qupid::{Key, Ledger, Offer, Policy};
//!
//! # fn main() -> qupid::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("qupid-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).expect("temp dir");
//! # let path = dir.join("ledger.db");
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt").block_on(async {
//! let ledger = SqliteLedger::open(&path).await?;
//! let offers = [Offer::new(Key::new("orders/1")?)];
//! let first = ledger.offer(&Policy::default(), &offers).await?;
//! assert!(matches!(first[0], Offered::Accepted(_)));
//! let again = ledger.offer(&Policy::default(), &offers).await?;
//! assert!(matches!(again[0], Offered::Duplicate(_)));
//! # Ok::<(), qupid::Error>(()) })?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```
//!
//! # One file, one namespace
//!
//! A file holds one pipeline's keys: open one file per pipeline (`orders.db`,
//! `invoices.db`). The tables are prefixed `qupid_`, so the file may also hold tables of your
//! own, but it is switched to WAL mode.
//!
//! # Read-only
//!
//! [`SqliteBuilder::read_only`] opens a file only to read it, with one read-only connection and no
//! writer thread: nothing in the file changes (no schema, no migration, no switch to WAL
//! mode), a file that holds no ledger is [`ErrorKind::NotFound`], every write method answers
//! [`ErrorKind::ReadOnly`], and a file or folder this process may not write can still be read
//! (see [`SqliteBuilder::read_only`] for WAL files there). See also [Read-only
//! ledgers](super#read-only-ledgers).
//!
//! # The writer thread and group commit
//!
//! One thread owns the only write connection. Every write (`offer`, `start`, `complete`, …)
//! is sent to it over a channel. It takes the first waiting request and every request already
//! waiting behind it (at most 1,024, or more if they arrive within the
//! [`commit_window`](SqliteBuilder::commit_window)), applies them all in **one** transaction
//! (`BEGIN IMMEDIATE … COMMIT`), and only then answers each caller. So one commit (and, with
//! [`Synchronous::Full`], one fsync) serves many concurrent callers: while a commit runs, the
//! next group gathers. A request that fails is undone alone and answered with its error while
//! the rest of the group commits: requests almost never fail (a refusal such as `LeaseLost` is
//! an answer, not a failure), so a group first runs with no savepoint at all, and only if one
//! of its requests fails is it rolled back and run again with a savepoint per request.
//!
//! Each transition is as few statements as it can be. An offer inserts the key's row
//! (`ON CONFLICT DO NOTHING`) and reads the row only if the key was already there. `start`,
//! `renew`, `complete` and `release` are one guarded write each (`UPDATE … WHERE key = ? AND
//! token = ? AND state = ?`) that changes only the columns the transition changes (for a
//! first start, and for a completion with no newer version offered, a narrower write whose
//! answer needs no read is tried first); only when it matches nothing is the row read, to
//! answer `LeaseLost` or `WrongState`. The token counter is read once per transaction and
//! written once, at its end.
//!
//! Reads (`get`, `list`, `stats`) run on a second thread with its own connection; WAL mode
//! lets them proceed while the writer commits, and they see every write already answered.
//! [`now`](crate::LedgerAdmin::now) reads the clock.
//!
//! If a thread stops (a bug made it panic), calls answer [`ErrorKind::Closed`] instead of
//! waiting forever. Dropping the last clone of the ledger finishes the requests already sent
//! and closes the file.
//!
//! # Durability
//!
//! The file is in WAL mode. With [`Synchronous::Normal`] (the default) a process crash loses
//! nothing that was answered; a power loss may lose the last commits. [`Synchronous::Full`]
//! syncs every group commit to disk before answering. See [`Synchronous`] for what a lost
//! commit means for keys and tokens.
//!
//! # Cancel safety
//!
//! Every write but `purge` is one job on the writer thread, committed whole or not at all,
//! and once sent it runs whether or not its caller still waits: dropping the call's future
//! leaves the whole batch either applied or not. `purge` removes rows in chunks of at most
//! 1,000, each chunk its own job, so that the offers and completions sent meanwhile run
//! between two chunks instead of waiting for the whole purge; dropping it may leave part of
//! the purge done.
//!
//! # Time, leases and tokens
//!
//! Leases expire by the ledger's [`Clock`], a [`MonotonicClock`] by default: wall-clock time,
//! so a lease taken before a restart still expires on time after it, and the next offer of a
//! key whose holder crashed is accepted. Fencing tokens come from a counter stored in the
//! file and advanced inside the write transaction, so they are never handed out twice, across
//! restarts and across processes sharing the file.
//!
//! # Sharing a file between processes
//!
//! Several processes (or several ledgers in one process) may open the same file: writes take
//! SQLite's write lock, so each transition is atomic across all of them, and two processes
//! offering the same key never both get it accepted. A process that finds the file locked
//! waits up to the [`busy_timeout`](SqliteBuilder::busy_timeout), then fails with a transient
//! [`ErrorKind::Unavailable`]. The processes must be on one machine (WAL needs shared memory,
//! so not a network file system), and their clocks are their own.
//!
//! # Schema
//!
//! A `qupid_meta` table holds the schema version and the token counter; `qupid_entries`
//! holds one row per key, with partial indexes: by `(state, at)` of the finished rows for
//! `purge`, and by key of the leased rows and of the Dead rows for `list` (Completed rows are
//! listed in key order from the table itself). `stats` counts each state in its index, and
//! the expired leases by reading each leased row's expiry through the leased index (a cost
//! in proportion to the keys in flight). This is schema version 1. Opening a file written by
//! an older qupid will migrate it (the schema keeps its version and a list of migrations,
//! each taking a file one version up); opening one written by a newer qupid fails with [`ErrorKind::Corrupt`] ("written by a newer qupid: schema version
//! N, this build reads up to M") and leaves it untouched.
//!
//! # Damaged rows
//!
//! A row this build cannot read (a state code outside 0 to 3, a negative token, a version
//! that is not valid UTF-8: a file edited by hand or by another program) is an answer for its
//! key alone, [`Offered::Unreadable`] or [`Refused::Unreadable`], and is left as it is; the
//! rest of the batch, and of its group commit, goes on. `remove` with `force` deletes such a
//! row; `get`, `list`, `retry` and `remove` without `force` fail with [`ErrorKind::Corrupt`]
//! naming the key. The schema's `CHECK` keeps state codes valid unless a writer turned it off
//! (`PRAGMA ignore_check_constraints`). The guarded writes of `start`, `renew`, `complete` and
//! `release` read only the state and the token, so a row damaged elsewhere (its version, its
//! error) is still moved by them; the next `offer` of the key answers it.
//!
//! # Why rusqlite
//!
//! The ledger uses [rusqlite](https://docs.rs/rusqlite) with SQLite bundled, rather than an
//! async driver such as sqlx's SQLite. SQLite is a library that blocks, so an async driver
//! runs it on a thread anyway; owning that thread ourselves gives true control of group
//! commit (which requests share a transaction, when it commits), no coupling to an async
//! runtime's blocking pool, and a bundled SQLite of known version with nothing to install.
//!
//! [`Clock`]: crate::clock::Clock
//! [`MonotonicClock`]: crate::clock::MonotonicClock

mod builder;
mod errors;
mod ops;
mod read_only;
mod schema;
mod writer;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use builder::{SqliteBuilder, Synchronous};

use super::types::*;
use super::{Ledger, LedgerAdmin};
use crate::clock::{Clock, Timestamp};
use crate::error::Result;
use crate::key::{Key, Offer};
use crate::policy::{Policy, Retention};
#[cfg(doc)]
use crate::ErrorKind;
use errors::File;
use writer::ConnThread;

/// A durable ledger in one SQLite file, for pipelines on one machine.
///
/// See the [module docs](self) for the design: WAL mode, one writer thread with group
/// commit, a reader thread, and what survives a crash. Open one with [`SqliteLedger::open`],
/// [`SqliteLedger::open_url`] or [`SqliteLedger::builder`].
///
/// Cloning is cheap: clones share the same threads and file. The file is closed when the
/// last clone is dropped, after the requests already sent are done.
#[derive(Clone)]
pub struct SqliteLedger {
    inner: Arc<Inner>,
}

struct Inner {
    file: Arc<File>,
    clock: Arc<dyn Clock>,
    synchronous: Synchronous,
    commit_window: Duration,
    /// The file's schema version when it was opened: [`schema::VERSION`] once a writer has
    /// opened it (a read-only ledger reads every version up to it as it is).
    schema: i64,
    // Dropped in this order: the writer finishes its requests before the reader goes.
    /// `None` for a read-only ledger.
    writer: Option<ConnThread>,
    reader: ConnThread,
}

impl SqliteLedger {
    fn new(
        file: Arc<File>,
        clock: Arc<dyn Clock>,
        writer: Option<ConnThread>,
        reader: ConnThread,
        synchronous: Synchronous,
        commit_window: Duration,
        schema: i64,
    ) -> Self {
        SqliteLedger {
            inner: Arc::new(Inner {
                file,
                clock,
                synchronous,
                commit_window,
                schema,
                writer,
                reader,
            }),
        }
    }

    fn file(&self) -> &File {
        &self.inner.file
    }

    /// The writer thread, or the read-only error for `doing`.
    fn writer(&self, doing: &str) -> Result<&ConnThread> {
        self.inner.writer.as_ref().ok_or_else(|| {
            super::read_only_error(
                &format!("the sqlite ledger {}", self.path().display()),
                doing,
            )
        })
    }

    /// Whether the ledger was opened [read-only](SqliteBuilder::read_only): its write methods
    /// answer [`ErrorKind::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.inner.writer.is_none()
    }

    /// A builder for the ledger in the file at `path`, to choose its settings (see
    /// [`SqliteBuilder`] for the defaults).
    pub fn builder(path: impl AsRef<Path>) -> SqliteBuilder {
        SqliteBuilder::new(path.as_ref().to_path_buf())
    }

    /// Opens the ledger in the file at `path` with the default settings, creating the file
    /// if it does not exist.
    ///
    /// # Errors
    ///
    /// As [`SqliteBuilder::open`]: [`ErrorKind::Config`] for a directory, [`ErrorKind::Ledger`]
    /// for a file that cannot be written, [`ErrorKind::Corrupt`] for a file that is not a
    /// ledger this build reads, [`ErrorKind::Unavailable`] if another process kept it locked.
    ///
    /// # Cancel safety
    ///
    /// As [`SqliteBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder(path).open().await
    }

    /// Opens the ledger named by a `sqlite://PATH` URL (see [`SqliteBuilder::from_url`] for the
    /// parameters it takes).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for a URL that is not a valid `sqlite:` URL, then as
    /// [`open`](SqliteLedger::open).
    ///
    /// # Cancel safety
    ///
    /// As [`SqliteBuilder::open`].
    pub async fn open_url(url: &str) -> Result<Self> {
        SqliteBuilder::from_url(url)?.open().await
    }

    /// How hard commits work to survive a power loss.
    pub fn synchronous(&self) -> Synchronous {
        self.inner.synchronous
    }
}

impl fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("path", &self.inner.file.path())
            .field("synchronous", &self.inner.synchronous)
            .field("commit_window", &self.inner.commit_window)
            .field("clock", &self.inner.clock)
            .field("read_only", &self.is_read_only())
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl SqliteLedger {
    /// `offer`, or with `start` `offer_and_start`: one job on the writer thread.
    async fn offers(&self, policy: &Policy, offers: &[Offer], start: bool) -> Result<Vec<Offered>> {
        let doing = if start {
            "offering and starting keys"
        } else {
            "offering keys"
        };
        let w = self.writer(doing)?;
        if offers.is_empty() {
            return Ok(Vec::new());
        }
        let (policy, offers) = (policy.clone(), offers.to_vec());
        w.run(doing, move |cx| ops::offer(cx, &policy, &offers, start))
            .await
    }
}

/// Deletes the rows of `state` within `bound`, [`PURGE_CHUNK`](ops::PURGE_CHUNK)
/// rows per job on the writer `w`, until a job deletes fewer: how many in all.
async fn purge_chunks(w: &ConnThread, state: State, bound: ops::PurgeBound) -> Result<u64> {
    let chunk = ops::PURGE_CHUNK;
    let mut removed = 0;
    loop {
        let bound = bound.clone();
        let n = w
            .run("purging", move |cx| {
                ops::purge_chunk(cx.conn, state, &bound, chunk)
            })
            .await?;
        removed += n;
        if n < chunk {
            return Ok(removed);
        }
    }
}

impl Ledger for SqliteLedger {
    async fn offer(&self, policy: &Policy, offers: &[Offer]) -> Result<Vec<Offered>> {
        self.offers(policy, offers, false).await
    }

    async fn offer_and_start(&self, policy: &Policy, offers: &[Offer]) -> Result<Vec<Offered>> {
        self.offers(policy, offers, true).await
    }

    async fn start(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> Result<Vec<Result<Started, Refused>>> {
        let w = self.writer("starting keys")?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let (policy, claims) = (policy.clone(), claims.to_vec());
        w.run("starting keys", move |cx| ops::start(cx, &policy, &claims))
            .await
    }

    async fn renew(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> Result<Vec<Result<Timestamp, Refused>>> {
        let w = self.writer("renewing leases")?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let (policy, claims) = (policy.clone(), claims.to_vec());
        w.run("renewing leases", move |cx| {
            ops::renew(cx, &policy, &claims)
        })
        .await
    }

    async fn complete(&self, claims: &[Claim]) -> Result<Vec<Result<Done, Refused>>> {
        let w = self.writer("completing keys")?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let claims = claims.to_vec();
        w.run("completing keys", move |cx| ops::complete(cx, &claims))
            .await
    }

    async fn fail(
        &self,
        policy: &Policy,
        failures: &[Failure],
    ) -> Result<Vec<Result<Failed, Refused>>> {
        let w = self.writer("failing keys")?;
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        let (policy, failures) = (policy.clone(), failures.to_vec());
        w.run("failing keys", move |cx| ops::fail(cx, &policy, &failures))
            .await
    }

    async fn release(&self, claims: &[Claim]) -> Result<Vec<Result<(), Refused>>> {
        let w = self.writer("releasing keys")?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let claims = claims.to_vec();
        w.run("releasing keys", move |cx| ops::release(cx, &claims))
            .await
    }

    /// The writer thread already groups concurrent calls into one transaction.
    fn groups_calls(&self) -> bool {
        true
    }
}

impl LedgerAdmin for SqliteLedger {
    async fn remove(&self, keys: &[Key], force: bool) -> Result<Vec<Removed>> {
        let w = self.writer("removing keys")?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        w.run("removing keys", move |cx| ops::remove(cx, &keys, force))
            .await
    }

    async fn retry(&self, keys: &[Key]) -> Result<Vec<Retried>> {
        let w = self.writer("retrying keys")?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        w.run("retrying keys", move |cx| ops::retry(cx, &keys))
            .await
    }

    /// Removes the finished rows `retention` no longer keeps, by age then by count, each
    /// finished state by its own rule.
    ///
    /// The rows go in chunks of at most 1,000, each chunk its own job on the writer thread
    /// (its own transaction), the oldest rows first, until a chunk removes fewer: the
    /// offers, starts and completions sent meanwhile run between two chunks, so a purge of
    /// a million rows holds them up for one chunk at a time, not for the whole purge. The
    /// time the rows are compared with is read once, when the purge starts. Keeping the
    /// newest `max_count` rows first finds, on the reader thread, the newest row past them
    /// (ties broken by key), then removes that row and every older one: a row that
    /// finishes while the purge runs is newer, and stays until the next purge.
    ///
    /// # Cancel safety
    ///
    /// Each chunk commits whole or not at all. Dropping the future leaves the chunks already
    /// sent done and sends no more, so part of the purge may be done; purging again finishes
    /// it.
    async fn purge(&self, retention: &Retention) -> Result<Purged> {
        let w = self.writer("purging")?;
        if retention.is_forever() {
            return Ok(Purged::default());
        }
        let now = self.inner.clock.now().0;
        let mut purged = Purged::default();
        for (state, keep, n) in [
            (State::Completed, retention.completed, &mut purged.completed),
            (State::Dead, retention.dead, &mut purged.dead),
        ] {
            if let Some(bound) = keep.max_age.and_then(|age| ops::age_bound(age, now)) {
                *n += purge_chunks(w, state, bound).await?;
            }
            if let Some(max) = keep.max_count {
                let bound = self
                    .inner
                    .reader
                    .run("purging", move |cx| ops::count_bound(cx.conn, state, max))
                    .await?;
                if let Some(bound) = bound {
                    *n += purge_chunks(w, state, bound).await?;
                }
            }
        }
        Ok(purged)
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>> {
        let key = key.clone();
        let r = &self.inner.reader;
        r.run("reading a key", move |cx| ops::get(cx.conn, key.clone()))
            .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        let query = query.clone();
        let r = &self.inner.reader;
        r.run("listing keys", move |cx| ops::list(cx.conn, &query))
            .await
    }

    async fn stats(&self) -> Result<Stats> {
        let r = &self.inner.reader;
        r.run("counting keys", move |cx| ops::stats(cx.conn, cx.now()))
            .await
    }

    async fn now(&self) -> Result<Timestamp> {
        Ok(self.inner.clock.now())
    }
}
