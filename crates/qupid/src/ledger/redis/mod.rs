//! The Redis ledger: one ledger shared by many machines.
//!
//! [`RedisLedger`] keeps each key's state in Redis (7.x; 6.2 should work). Every
//! [`Ledger`](super::Ledger) call is **one Lua script over the whole batch**: atomic, one
//! round trip, with fencing tokens from one counter and leases on the **server's** clock
//! (`TIME`), so clock skew between app machines cannot break leases.
//!
//! ```no_run
//! use qupid::ledger::RedisLedger;
//! use qupid::{Key, Ledger, Offer, Policy};
//!
//! # async fn demo() -> qupid::Result<()> {
//! let ledger = RedisLedger::open("redis://127.0.0.1:6379/0", "orders").await?;
//! let offers = [Offer::new(Key::new("orders/123")?)];
//! let outcome = ledger.offer(&Policy::default(), &offers).await?;
//! println!("{outcome:?}");
//! # Ok(())
//! # }
//! ```
//!
//! # Data layout
//!
//! Every key of namespace `NS` starts with `qupid:{NS}:`; the user's key is appended
//! verbatim (Redis keys are binary-safe, so any UTF-8, NUL and newlines included, works). A
//! namespace split into `N` [shards](#one-namespace-over-many-nodes) has the keys below once
//! per shard `I`, under `qupid:{NS:I/N}:` (and records `N` in `qupid:{NS}:shards`).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `qupid:{NS}:r:KEY` | string | the record of `KEY`, as text: see [Records](#records) |
//! | `qupid:{NS}:idx:queued`, `…:running`, `…:completed`, `…:dead` | sorted set | every key in that state, score 0: `list` pages with `ZRANGEBYLEX` (byte order), `stats` counts with four `ZCARD`s (and reads the leased keys' records for their expiry) |
//! | `qupid:{NS}:fin:completed`, `…:dead` | sorted set | finished keys scored by finish time: `purge` by age (`ZCOUNT`) and by count (`ZCARD`), oldest first |
//! | `qupid:{NS}:token` | string | the fencing-token counter: the last token drawn (read once and written once by a call that draws tokens) |
//! | `qupid:{NS}:clock_offset_ms` | string | optional: milliseconds added to the server's clock |
//! | `qupid:{NS}:clock_pinned_ms` | string | optional: when set, the ledger's clock reads this instead |
//! | `qupid:{NS}:layout` | string | the layout version, `1`: written with the namespace's first token |
//!
//! Nothing scans the keyspace: no `KEYS`, no `SCAN`. `list` and `stats`' counts per state
//! cost the same with millions of keys as with ten. Its count of expired leases
//! ([`Stats::expired`](super::Stats::expired)) has no index to read (one scored by lease
//! expiry would cost every renewal a sorted-set move), so it reads the record of every Queued
//! and Running key, at most 2,000 per script (the client loops, passing on the first
//! script's clock): it costs time in proportion to the keys in flight, not to the namespace.
//! The counts per state and the expired leases are of one moment as long as at most 2,000
//! keys are in flight; past that, each script counts its own chunk. A retained finished key
//! costs one short string and two sorted-set entries (the key is stored three times); a
//! leased key, one string and one entry. `list` answers at most 10,000 records per page.
//! Measured costs are in the repository's `docs/ledgers.md`.
//!
//! A record key holding something else than a record (a list, a hash, a string that does not
//! decode: another program's key in the namespace, or a damaged record) is an answer for that
//! key alone: [`Offered::Unreadable`](super::Offered::Unreadable) or
//! [`Refused::Unreadable`](super::Refused::Unreadable), saying what was found ("a list", "a
//! string that is not a qupid record"). The batch scripts write nothing for it and go on with
//! the other keys. `remove` with `force` deletes it (and takes its key out of every index);
//! `get`, `list`, `retry`, `purge` and `remove` without `force` fail with
//! [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) naming the key. A namespace-wide key of
//! the wrong type (the token counter, an index, the layout marker) fails every call with
//! `Corrupt` naming it. Every script reads and checks everything it will touch *before* its
//! first write, so a call that fails changes nothing.
//!
//! ## Records
//!
//! A record is one line of text: the state letter (`q`, `r`, `c`, `d`) and the superseded
//! flag (`0`, `1`), then, separated by spaces, the fencing token, the time in ms (the lease
//! expiry while leased, the finish time once finished), the attempts, the times abandoned,
//! and the byte lengths of the version, the newer version and the last error (`-1` when
//! absent); then `|` and those three strings end to end. So `c0 17 1700000000000 1 0 2 -1 -1|v1`
//! is Completed with token 17, attempt 1 and version `v1`. The lengths make any bytes safe in
//! versions and errors; `GET` shows a record as it is, and the CLI's `show` decodes it.
//!
//! ## Layout versions
//!
//! This is layout 1: `qupid:{NS}:layout` holds `1`, written with the namespace's first token
//! (so opening alone writes nothing). [`RedisLedger::open`] and every script read the
//! marker: a marker of another (newer) layout, or a token counter without a marker, fails
//! with [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) and changes nothing. A later layout
//! will come with its migration, run when the ledger is opened.
//!
//! # Cost
//!
//! The Redis server's time is what a busy pipeline spends, and a script's time goes mostly to
//! the Lua interpreter and the conversions around its Redis calls, so the batch scripts make
//! no Redis call per key. A script reads every record of its batch with one `MGET` (when some
//! are missing, one `EXISTS` over those tells a missing key from one of another type, which
//! `MGET` cannot), works on the records in Lua, and writes at the end: one `MSET` of the
//! changed records, one multi-member `ZADD` or `ZREM` per index, one `SET` of the token
//! counter. Each record is decoded into Lua locals (no table per key), and `complete` matches
//! the common record (Running, no newer version) with one pattern and rewrites only its head.
//! The client tells the scripts whether a key is in the batch twice (rare): if not, they keep
//! records by position rather than in a table keyed by record key. Per call there are a
//! fixed dozen small commands (`GET` of the four namespace strings, `TYPE` of the six sorted
//! sets, `TIME`).
//!
//! A pipeline spends two scripts per key: [`offer_and_start`](super::Ledger::offer_and_start)
//! (one script: accepted keys go straight to Running) and `complete`. About two fifths of
//! the server's work per key is the sorted sets: the key enters and leaves the Running index,
//! and enters the Completed one and the finish-time one.
//!
//! # The clock, and moving it
//!
//! Leases, blocking windows and retention use the server's `TIME`, in milliseconds, plus the
//! integer in `qupid:{NS}:clock_offset_ms` if there is one. The offset is a test and
//! operations facility: `INCRBY qupid:{NS}:clock_offset_ms 60000` moves one namespace's
//! clock a minute ahead (say, to expire every lease at once after a known crash). Moving it
//! back can make leases last longer than their `lease`; qupid itself never writes it.
//!
//! If `qupid:{NS}:clock_pinned_ms` exists, the namespace's clock *is* that value and stands
//! still: a manual clock for deterministic tests (the model-based test uses it, so that
//! records finished "at the same time" tie exactly as in the model, which is the rules). Never set it
//! in production.
//!
//! # Eviction
//!
//! A Redis that evicts keys under memory pressure would silently forget completed keys (they
//! would be processed again) and leases (two holders at once). [`RedisLedger::open`]
//! therefore reads `maxmemory-policy` and refuses to start with
//! [`ErrorKind::Config`](crate::ErrorKind::Config) unless it is `noeviction` or a
//! `volatile-*` policy: those evict only keys that have a TTL, and qupid never sets one (when
//! nothing is left to evict, writes fail with an OOM error instead, which qupid reports as
//! [`ErrorKind::Ledger`](crate::ErrorKind::Ledger)). Where `CONFIG GET` is not permitted (some
//! managed services), a warning is logged through `tracing` and the ledger starts: checking
//! the policy is then the operator's job.
//!
//! # Redis Cluster
//!
//! The braces in `qupid:{NS}:` are a hash tag: a whole namespace lives in one slot, so the
//! scripts touch only keys of one node and the ledger works unchanged against a Cluster.
//! [`RedisLedger::open_cluster`] (or the URL `redis+cluster://host:port,host:port` with
//! [`AnyLedger`](super::AnyLedger) and the CLI) connects through a cluster-aware connection,
//! which sends each script to the node owning its namespace's slot and follows redirections
//! and failovers; the whole conformance suite runs against a three-node cluster in the
//! tests. Different namespaces hash to different slots, so pipelines with a namespace each
//! spread over the nodes.
//!
//! ## One namespace over many nodes
//!
//! Unsharded, one namespace is one slot, so one node's throughput and memory.
//! [`RedisBuilder::shards`] splits it: each key belongs to shard `FNV-1a(key) % N`, and each
//! shard is a namespace of its own under the hash tag `{NS:I/N}`, with its own indexes,
//! token counter and clock keys (the clock offset is then set in every shard). A batch goes
//! as one script per shard it touches, all at once, and its answers come back in the
//! batch's order; `list` merges the shards' pages in key order; `stats` sums the shards'
//! counts, each of its own moment; `purge` by age runs in each shard, and by count finds
//! the cut across shards first, so it keeps exactly the newest records of the namespace.
//! Shard `I` draws the tokens `I + N`, `I + 2N`, ...: distinct across the namespace and
//! growing for each key (fencing compares tokens of one key only), but not in one order
//! across keys. The conformance suite runs on 4 shards and, on a three-node cluster, on 16.
//!
//! ```no_run
//! use qupid::ledger::RedisLedger;
//!
//! # async fn demo() -> qupid::Result<()> {
//! let ledger = RedisLedger::cluster_builder(&["redis://10.0.0.1:7000"], "orders")
//!     .shards(16)
//!     .open()
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Failures
//!
//! Connection errors and timeouts are [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)
//! (transient: retry); the connection re-establishes itself. Scripts run by `EVALSHA`, and a
//! server that lost them (restart, failover, `SCRIPT FLUSH`) gets them again transparently.
//! A call that fails may or may not have been applied (the script may have run before the
//! reply was lost), and in a sharded namespace it may have been applied in some shards and
//! not others; retrying is safe, as every transition is guarded by state and token. (`remove`
//! without force and `retry` check every shard before writing in any, so an unreadable record
//! fails them with nothing changed, as unsharded.)
//!
//! # Cancel safety
//!
//! A script runs whole or not at all, so dropping a call's future leaves each item either
//! fully applied or not applied (in a sharded namespace, each shard's items alike). `purge` runs in chunks of at most 1,000 records so it never
//! blocks the server for long; dropping it may leave part of the purge done.

mod builder;
mod conn;
mod decode;
mod errors;
mod ops;
mod schema;
mod scripts;
mod tls;
mod wire;

use std::fmt;
use std::sync::Arc;

pub use self::builder::RedisBuilder;

use self::conn::Conn;
use self::schema::Keys;

/// A [`Ledger`](super::Ledger) kept in Redis, for pipelines spread over many machines.
///
/// Open one with [`RedisLedger::open`], [`RedisLedger::open_cluster`] or
/// [`RedisLedger::builder`]. Cloning is cheap: clones share one multiplexed
/// connection. See the [module docs](self) for the data layout, the clock and the eviction
/// policy it requires.
#[derive(Clone)]
pub struct RedisLedger {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    /// The key names of each shard: one, unless the namespace is split
    /// ([`RedisBuilder::shards`]).
    shards: Vec<Keys>,
    namespace: String,
    /// The URL with any password hidden, for messages.
    url: String,
    /// Opened with [`RedisBuilder::read_only`]: every write method refuses.
    read_only: bool,
}

impl fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLedger")
            .field("url", &self.inner.url)
            .field("namespace", &self.inner.namespace)
            .field("read_only", &self.inner.read_only)
            .field("shards", &self.inner.shards.len())
            .finish_non_exhaustive()
    }
}

impl RedisLedger {
    /// How many shards the namespace is split into (1 unless opened with
    /// [`RedisBuilder::shards`]).
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// The Redis key that holds `key`'s record: for operators, to look at it with `GET` or
    /// to find the node that holds it (`CLUSTER KEYSLOT`).
    pub fn record_key(&self, key: &crate::Key) -> Vec<u8> {
        let shard = schema::shard_of(key.as_str(), self.inner.shards.len());
        self.inner.shards[shard].record(key.as_str())
    }
}
