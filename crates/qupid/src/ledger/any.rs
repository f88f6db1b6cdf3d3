//! A ledger chosen at run time, from a URL.

use super::types::*;
use super::{Ledger, LedgerAdmin, MemoryLedger};
use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind, Result};
use crate::key::{Key, Offer};
use crate::policy::{Policy, Retention};

/// Any of the ledgers this build has, chosen at run time from a URL (configuration, the CLI).
///
/// An enum rather than a `Box<dyn Ledger>`: calls dispatch with a `match`, no future is boxed,
/// and [`Ledger`] stays free to use `impl Future` in its methods.
///
/// | URL | ledger | feature |
/// |---|---|---|
/// | `memory:` | [`MemoryLedger`] (empty, this process only) | always |
/// | `sqlite://path/to/file.db` | `SqliteLedger` | `sqlite` |
/// | `redis://host:port/db` | `RedisLedger` in `namespace` | `redis` |
/// | `redis+cluster://host:port,host:port` | `RedisLedger` on a Redis Cluster, in `namespace` | `redis` |
/// | `postgres://user@host/db` | `PostgresLedger` in `namespace` | `postgres` |
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyLedger {
    /// An in-memory ledger.
    Memory(MemoryLedger),
    /// A SQLite ledger.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    Sqlite(super::SqliteLedger),
    /// A Redis ledger.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    Redis(super::RedisLedger),
    /// A PostgreSQL ledger.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    Postgres(super::PostgresLedger),
}

/// Calls `$call` on whichever ledger `$self` holds.
macro_rules! dispatch {
    ($self:ident, $l:ident => $call:expr) => {
        match $self {
            AnyLedger::Memory($l) => $call,
            #[cfg(feature = "sqlite")]
            AnyLedger::Sqlite($l) => $call,
            #[cfg(feature = "redis")]
            AnyLedger::Redis($l) => $call,
            #[cfg(feature = "postgres")]
            AnyLedger::Postgres($l) => $call,
        }
    };
}

impl AnyLedger {
    /// Opens the ledger `url` names; `namespace` selects the queue in a shared server
    /// (memory and SQLite have one queue each, their process or their file).
    ///
    /// The namespace is checked first, by one rule for every ledger
    /// ([`check_namespace`](super::check_namespace): 1 to 48 characters of `a-z`, `0-9`
    /// and `_`), so a name that works on one ledger works on any, and a bad one is refused
    /// before anything is opened — for memory and SQLite too.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for a namespace that breaks the rule, or a URL this build
    /// cannot open (an unknown scheme, or a ledger whose feature is off), and whatever the
    /// ledger's own constructor answers (unreachable server, corrupt file).
    pub async fn open(url: &str, namespace: &str) -> Result<Self> {
        Self::open_with(url, namespace, false).await
    }

    /// Opens the ledger `url` names, read-only: to look, never to write. Nothing is created,
    /// migrated or changed — not a SQLite file, its schema or its journal mode; not a
    /// PostgreSQL schema; not a Redis key — and the ledger's write methods answer
    /// [`ErrorKind::ReadOnly`] (see [Read-only ledgers](super#read-only-ledgers)). What the
    /// CLI's `stats`, `list` and `show` open.
    ///
    /// `memory:` is a new, empty ledger that refuses writes
    /// ([`MemoryLedger::read_only`]): the URL names a ledger of its own, so there is always
    /// one, with nothing in it.
    ///
    /// # Errors
    ///
    /// As [`open`](AnyLedger::open), and [`ErrorKind::NotFound`] where there is no ledger to
    /// read: no SQLite file, an empty one or another program's database; no schema for the
    /// namespace in PostgreSQL; no key of the namespace in Redis. A file that is not SQLite
    /// at all is [`ErrorKind::Corrupt`], as for `open`.
    pub async fn open_read_only(url: &str, namespace: &str) -> Result<Self> {
        Self::open_with(url, namespace, true).await
    }

    /// Whether this ledger was opened [read-only](AnyLedger::open_read_only).
    pub fn is_read_only(&self) -> bool {
        dispatch!(self, l => l.is_read_only())
    }

    async fn open_with(url: &str, namespace: &str, read_only: bool) -> Result<Self> {
        super::check_namespace(namespace)?;
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "memory" if read_only => Ok(AnyLedger::Memory(MemoryLedger::new().read_only())),
            "memory" => Ok(AnyLedger::Memory(MemoryLedger::new())),
            "sqlite" => open_sqlite(url, read_only).await,
            "redis" | "rediss" => open_redis(url, namespace, read_only).await,
            "redis+cluster" | "rediss+cluster" => {
                open_redis_cluster(url, namespace, read_only).await
            }
            "postgres" | "postgresql" => open_postgres(url, namespace, read_only).await,
            _ => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "expected a ledger URL (memory:, sqlite://PATH, redis://HOST, \
                     redis+cluster://HOST:PORT,HOST:PORT, postgres://HOST/DB), found {url:?}"
                ),
            )),
        }
    }
}

#[cfg_attr(
    all(feature = "sqlite", feature = "redis", feature = "postgres"),
    allow(dead_code)
)]
fn not_built(feature: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("{feature} ledgers are not in this build: enable qupid's `{feature}` feature"),
    )
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(url: &str, read_only: bool) -> Result<AnyLedger> {
    let builder = super::sqlite::SqliteBuilder::from_url(url)?.read_only(read_only);
    Ok(AnyLedger::Sqlite(builder.open().await?))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(_url: &str, _read_only: bool) -> Result<AnyLedger> {
    Err(not_built("sqlite"))
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str, namespace: &str, read_only: bool) -> Result<AnyLedger> {
    let builder = super::RedisLedger::builder(url, namespace).read_only(read_only);
    Ok(AnyLedger::Redis(builder.open().await?))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_url: &str, _namespace: &str, _read_only: bool) -> Result<AnyLedger> {
    Err(not_built("redis"))
}

#[cfg(feature = "redis")]
async fn open_redis_cluster(url: &str, namespace: &str, read_only: bool) -> Result<AnyLedger> {
    let nodes = cluster_nodes(url);
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let builder = super::RedisLedger::cluster_builder(&nodes, namespace).read_only(read_only);
    Ok(AnyLedger::Redis(builder.open().await?))
}

#[cfg(not(feature = "redis"))]
async fn open_redis_cluster(_url: &str, _namespace: &str, _read_only: bool) -> Result<AnyLedger> {
    Err(not_built("redis"))
}

/// The node URLs of a `redis+cluster://[user:password@]host:port,host:port[/]` URL (or
/// `rediss+cluster://`): `redis://[user:password@]host:port` for each listed node.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn cluster_nodes(url: &str) -> Vec<String> {
    let (scheme, rest) = url.split_once("://").unwrap_or((url, ""));
    let scheme = scheme
        .to_ascii_lowercase()
        .strip_suffix("+cluster")
        .unwrap_or("redis")
        .to_owned();
    let hosts = rest.split('/').next().unwrap_or_default();
    let (auth, hosts) = match hosts.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), hosts),
    };
    hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{auth}{h}"))
        .collect()
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, namespace: &str, read_only: bool) -> Result<AnyLedger> {
    let builder = super::PostgresLedger::builder(url, namespace).read_only(read_only);
    Ok(AnyLedger::Postgres(builder.open().await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str, _namespace: &str, _read_only: bool) -> Result<AnyLedger> {
    Err(not_built("postgres"))
}

impl Ledger for AnyLedger {
    async fn offer(&self, policy: &Policy, offers: &[Offer]) -> Result<Vec<Offered>> {
        dispatch!(self, l => l.offer(policy, offers).await)
    }
    async fn start(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> Result<Vec<Result<Started, Refused>>> {
        dispatch!(self, l => l.start(policy, claims).await)
    }
    async fn offer_and_start(&self, policy: &Policy, offers: &[Offer]) -> Result<Vec<Offered>> {
        dispatch!(self, l => l.offer_and_start(policy, offers).await)
    }
    async fn renew(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> Result<Vec<Result<Timestamp, Refused>>> {
        dispatch!(self, l => l.renew(policy, claims).await)
    }
    async fn complete(&self, claims: &[Claim]) -> Result<Vec<Result<Done, Refused>>> {
        dispatch!(self, l => l.complete(claims).await)
    }
    async fn fail(
        &self,
        policy: &Policy,
        failures: &[Failure],
    ) -> Result<Vec<Result<Failed, Refused>>> {
        dispatch!(self, l => l.fail(policy, failures).await)
    }
    async fn release(&self, claims: &[Claim]) -> Result<Vec<Result<(), Refused>>> {
        dispatch!(self, l => l.release(claims).await)
    }
    fn groups_calls(&self) -> bool {
        dispatch!(self, l => l.groups_calls())
    }
}

impl LedgerAdmin for AnyLedger {
    async fn remove(&self, keys: &[Key], force: bool) -> Result<Vec<Removed>> {
        dispatch!(self, l => l.remove(keys, force).await)
    }
    async fn retry(&self, keys: &[Key]) -> Result<Vec<Retried>> {
        dispatch!(self, l => l.retry(keys).await)
    }
    async fn purge(&self, retention: &Retention) -> Result<Purged> {
        dispatch!(self, l => l.purge(retention).await)
    }
    async fn get(&self, key: &Key) -> Result<Option<Record>> {
        dispatch!(self, l => l.get(key).await)
    }
    async fn list(&self, query: &ListQuery) -> Result<Page> {
        dispatch!(self, l => l.list(query).await)
    }
    async fn stats(&self) -> Result<Stats> {
        dispatch!(self, l => l.stats().await)
    }
    async fn now(&self) -> Result<Timestamp> {
        dispatch!(self, l => l.now().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_pick_a_ledger_or_say_what_is_wrong() {
        assert!(matches!(
            AnyLedger::open("memory:", "q").await.unwrap(),
            AnyLedger::Memory(_)
        ));
        let err = AnyLedger::open("mysql://localhost/db", "q")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("mysql://localhost/db"), "{err}");
        let err = AnyLedger::open("no scheme", "q").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn a_read_only_memory_ledger_is_empty_and_refuses_writes() {
        use crate::{Key, Offer};
        let l = AnyLedger::open_read_only("memory:", "q").await.unwrap();
        assert!(l.is_read_only());
        assert_eq!(l.stats().await.unwrap().total(), 0);
        let offers = [Offer::new(Key::new("k").unwrap())];
        let err = l.offer(&Policy::default(), &offers).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
        let err = l.purge(&Retention::default()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
        assert!(!AnyLedger::open("memory:", "q")
            .await
            .unwrap()
            .is_read_only());
    }

    #[test]
    fn cluster_urls_list_their_nodes() {
        assert_eq!(
            cluster_nodes("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/"),
            ["redis://10.0.0.1:7000", "redis://10.0.0.2:7001"]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://u:p@a:1,b:2"),
            ["rediss://u:p@a:1", "rediss://u:p@b:2"]
        );
        assert!(cluster_nodes("redis+cluster://").is_empty());
    }
}
