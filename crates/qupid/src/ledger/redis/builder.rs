//! Opening a [`RedisLedger`]: the URL, the namespace and the server's eviction policy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::{Client, ErrorKind as RedisKind, Value};

use super::conn::Conn;
use super::errors::{classify, map_redis, redact};
use super::schema::{check_namespace, shards_key, Keys, MAX_SHARDS};
use super::scripts::{prepare, run, SCRIPTS};
use super::tls;
use super::{Inner, RedisLedger};
use crate::error::{Error, ErrorKind, Result};

/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reply may take before the call fails as unavailable. Generous (a batch of
/// 10,000 keys takes about 70 ms), yet well inside the default 30 s lease, so a renewal
/// against a hung server fails in time to be noticed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnection attempts before a call fails (with exponential backoff from 100 ms).
const RECONNECT_RETRIES: usize = 3;

/// Settings for opening a [`RedisLedger`]; made by [`RedisLedger::builder`] (one server) or
/// [`RedisLedger::cluster_builder`] (a Redis Cluster).
///
/// ## Defaults
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`read_only`](RedisBuilder::read_only) | `false` | opens read-write (connecting itself writes nothing either) |
/// | [`shards`](RedisBuilder::shards) | the namespace's own count, or 1 for a new one | a new namespace lives in one hash slot |
///
/// ```no_run
/// use qupid::ledger::RedisLedger;
/// use qupid::LedgerAdmin;
///
/// # async fn example() -> qupid::Result<()> {
/// let ledger = RedisLedger::builder("redis://127.0.0.1:6379/0", "orders")
///     .read_only(true)
///     .open()
///     .await?;
/// println!("{:?}", ledger.stats().await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBuilder {
    nodes: Nodes,
    namespace: String,
    read_only: bool,
    shards: Option<u16>,
}

/// Where a [`RedisBuilder`] connects.
#[derive(Clone)]
enum Nodes {
    /// One server, by URL.
    One(String),
    /// Any nodes of a Redis Cluster, by URL.
    Cluster(Vec<String>),
}

impl std::fmt::Debug for RedisBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = match &self.nodes {
            Nodes::One(url) => vec![redact(url)],
            Nodes::Cluster(urls) => urls.iter().map(|u| redact(u)).collect(),
        };
        f.debug_struct("RedisBuilder")
            .field("nodes", &nodes)
            .field("cluster", &matches!(self.nodes, Nodes::Cluster(_)))
            .field("namespace", &self.namespace)
            .field("read_only", &self.read_only)
            .field("shards", &self.shards)
            .finish()
    }
}

impl RedisLedger {
    /// Connects to the Redis server at `url` (`redis://[user:password@]host[:port][/db]`)
    /// and opens `namespace`, creating nothing until the first offer. The same as
    /// `RedisLedger::builder(url, namespace).open()`.
    ///
    /// `rediss://` connects over TLS (rustls; no OpenSSL library needed). The server's
    /// certificate must chain to the system's roots, or to the CA certificates of a PEM file
    /// named by `?tls_ca_file=PATH` (a private CA, as managed services and self-hosted
    /// servers use); it must name the host. `rediss://host:6380/#insecure` skips the
    /// checks — for a test server with a self-signed certificate, never in production.
    ///
    /// Connecting reads the namespace's layout marker and writes nothing (see
    /// [Layout versions](super#layout-versions)).
    ///
    /// The connection is a [`ConnectionManager`]: one multiplexed connection shared by every
    /// clone of the ledger, re-established by itself after a network error. A call that gets
    /// no reply within 10 seconds fails as [`ErrorKind::Unavailable`].
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::Config`] if `namespace` is empty, longer than 256 bytes, or contains
    ///   braces or control characters; if `url` cannot be parsed; if TLS fails (an unreadable
    ///   `tls_ca_file`, a server certificate that is not trusted or does not name the host);
    ///   or if the server's `maxmemory-policy` may evict keys (see [Eviction](super#eviction)).
    /// - [`ErrorKind::Unavailable`] if the server cannot be reached; the message names the
    ///   URL (with any password hidden).
    /// - [`ErrorKind::Corrupt`] if the namespace was written by a newer qupid (an unknown
    ///   layout), or holds a key that is not what the layout says (named in the message).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes closes the connection; connecting writes
    /// nothing, so nothing is left half-done.
    pub async fn open(url: &str, namespace: &str) -> Result<Self> {
        Self::builder(url, namespace).open().await
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each; the
    /// client learns the others and the slot map from them) and opens `namespace`, creating
    /// nothing until the first offer. The same as
    /// `RedisLedger::cluster_builder(nodes, namespace).open()`.
    ///
    /// Every key of a namespace shares one hash tag, so a namespace lives in one slot: each
    /// script goes to the node owning it, and the ledger works as against one server. The
    /// cluster connection follows `MOVED` and `ASK` redirections and re-reads the slot map
    /// after a failover; a call that still fails (no node owns the slot yet, the cluster is
    /// down) fails as [`ErrorKind::Unavailable`], which callers retry. Different namespaces
    /// land in different slots, so several pipelines (one namespace each) spread over the
    /// cluster; to spread one namespace, see [Redis Cluster](super#redis-cluster). The
    /// eviction policy is checked on one node: configure every node alike.
    ///
    /// # Errors
    ///
    /// As [`open`](RedisLedger::open), with `Config` also for an empty `nodes`.
    ///
    /// # Cancel safety
    ///
    /// As [`open`](RedisLedger::open).
    pub async fn open_cluster(nodes: &[&str], namespace: &str) -> Result<Self> {
        Self::cluster_builder(nodes, namespace).open().await
    }

    /// Settings for opening `namespace` on the Redis server at `url`; see [`RedisBuilder`] and
    /// [`open`](RedisLedger::open).
    pub fn builder(url: &str, namespace: &str) -> RedisBuilder {
        RedisBuilder {
            nodes: Nodes::One(url.to_owned()),
            namespace: namespace.to_owned(),
            read_only: false,
            shards: None,
        }
    }

    /// Settings for opening `namespace` on the Redis Cluster that `nodes` belong to; see
    /// [`RedisBuilder`] and [`open_cluster`](RedisLedger::open_cluster).
    pub fn cluster_builder(nodes: &[&str], namespace: &str) -> RedisBuilder {
        RedisBuilder {
            nodes: Nodes::Cluster(nodes.iter().map(|n| (*n).to_owned()).collect()),
            namespace: namespace.to_owned(),
            read_only: false,
            shards: None,
        }
    }

    /// The namespace this ledger works in.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Whether the ledger was opened [read-only](RedisBuilder::read_only): its write methods
    /// answer [`ErrorKind::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }
}

impl RedisBuilder {
    /// Opens the namespace read-only, to look and never write: connecting creates nothing,
    /// and the ledger's write methods (`offer`, `start`, `renew`,
    /// `complete`, `fail`, `release`, `remove`, `retry`, `purge`) answer
    /// [`ErrorKind::ReadOnly`] without a round trip; `get`, `list`, `stats` and `now` read as
    /// usual. See [Read-only ledgers](crate::ledger#read-only-ledgers).
    ///
    /// [`open`](RedisBuilder::open) then fails with [`ErrorKind::NotFound`] if the namespace
    /// holds none of its keys (no token counter, no index, no layout marker: nothing was ever
    /// offered in it). The layout and the eviction policy are checked as for a read-write
    /// connect.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Splits the namespace into `shards` shards, each its own hash tag, so that on a Redis
    /// Cluster one namespace spreads over several slots, and so over several nodes (its
    /// throughput is no longer one node's). Default 1: the whole namespace in one slot.
    ///
    /// A key's shard is a hash of the key, fixed forever; each shard has its own indexes
    /// and token counter (tokens grow per shard, and so per key, which is all fencing needs).
    /// A batch goes as one script per shard it touches, the shards' scripts at once; `list`
    /// merges the shards' pages in key order, `stats` sums the shards' counts (each of its own
    /// moment), and `purge` by count keeps the newest records across all shards. A call
    /// that fails in one shard may have been applied in another, as with any failed call
    /// (see [Failures](super#failures)).
    ///
    /// The count is part of the namespace: the first read-write open of a sharded namespace
    /// writes it (`qupid:{NS}:shards`), and later opens that do not set `shards` (the CLI,
    /// [`AnyLedger`](crate::AnyLedger), a dashboard) read it from there. Opening with
    /// another count fails with [`ErrorKind::Config`], as does splitting a namespace that
    /// already holds unsharded records. Between 1 and 1,024.
    ///
    /// Splitting has a cost where it cannot spread (on one server, each batch becomes
    /// several smaller scripts): leave a namespace unsharded unless one node is the
    /// bottleneck, then pick the smallest count that covers the nodes (16 spreads well over
    /// 3). Figures: the repository's `docs/ledgers.md`.
    pub fn shards(mut self, shards: u16) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Connects and opens the namespace; see [`RedisLedger::open`] and
    /// [`RedisLedger::open_cluster`].
    ///
    /// # Errors
    ///
    /// As [`RedisLedger::open`] (and, for a cluster, `Config` for no nodes); read-only,
    /// also [`ErrorKind::NotFound`] and [`ErrorKind::ReadOnly`] as
    /// [`read_only`](RedisBuilder::read_only) says.
    ///
    /// # Cancel safety
    ///
    /// As [`RedisLedger::open`].
    pub async fn open(self) -> Result<RedisLedger> {
        check_namespace(&self.namespace)?;
        if let Some(n) = self.shards.filter(|n| !(1..=MAX_SHARDS).contains(n)) {
            return Err(Error::config(format!(
                "expected between 1 and {MAX_SHARDS} shards, found {n}"
            )));
        }
        let (conn, shown) = match &self.nodes {
            Nodes::One(url) => connect_node(url).await?,
            Nodes::Cluster(nodes) => connect_nodes(nodes).await?,
        };
        RedisLedger::from_conn(conn, shown, &self.namespace, self.read_only, self.shards).await
    }
}

/// A connection to the server at `url`, and the URL to show.
async fn connect_node(url: &str) -> Result<(Conn, String)> {
    let shown = redact(url);
    let (url, tls) = tls::split(url)?;
    let bad_url = |e: ::redis::RedisError| {
        Error::with_source(
            ErrorKind::Config,
            format!("expected a redis url like redis://host:6379/0, found {shown:?}: {e}"),
            e,
        )
    };
    let client = match tls.certificates()? {
        Some(certs) => Client::build_with_tls(url.as_str(), certs).map_err(bad_url)?,
        None => Client::open(url.as_str()).map_err(bad_url)?,
    };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_max_delay(Duration::from_secs(2));
    let conn = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| cannot_connect(e, &shown))?;
    Ok((Conn::Node(conn), shown))
}

/// A connection to the Redis Cluster that `nodes` belong to, and the nodes to show.
async fn connect_nodes(nodes: &[String]) -> Result<(Conn, String)> {
    if nodes.is_empty() {
        return Err(Error::config(
            "expected at least one redis cluster node url, found none",
        ));
    }
    let shown = nodes
        .iter()
        .map(|n| redact(n))
        .collect::<Vec<_>>()
        .join(",");
    let mut urls = Vec::with_capacity(nodes.len());
    let mut ca = None;
    for node in nodes {
        let (url, tls) = tls::split(node)?;
        urls.push(url);
        ca = ca.or(tls.certificates()?);
    }
    let mut builder = ClusterClient::builder(urls)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(RECONNECT_RETRIES as u32);
    if let Some(certs) = ca {
        builder = builder.certs(certs);
    }
    let client = builder.build().map_err(|e| {
        Error::with_source(
            ErrorKind::Config,
            format!(
                "expected redis cluster node urls like redis://host:7000, found \
                     {shown:?}: {e}"
            ),
            e,
        )
    })?;
    let conn = client
        .get_async_connection()
        .await
        .map_err(|e| cannot_connect(e, &shown))?;
    Ok((Conn::Cluster(conn), shown))
}

impl RedisLedger {
    /// Checks the server's eviction policy and the namespace (a layout this build reads; for
    /// a read-only open, a ledger at all), and answers the ledger.
    async fn from_conn(
        conn: Conn,
        shown: String,
        namespace: &str,
        read_only: bool,
        shards: Option<u16>,
    ) -> Result<Self> {
        check_eviction(&conn, &shown).await?;
        let shards = check_shards(&conn, namespace, &shown, shards, read_only).await?;
        let keys: Vec<Keys> = if shards == 1 {
            vec![Keys::new(namespace)]
        } else {
            (0..usize::from(shards))
                .map(|i| Keys::shard(namespace, i, usize::from(shards)))
                .collect()
        };
        let mut existing = 0;
        for k in &keys {
            existing += probe(&conn, k, namespace).await?;
        }
        if read_only && existing == 0 {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no qupid ledger here: namespace {namespace:?} holds no keys in redis at \
                     {shown} (nothing was ever offered in it; a read-only open creates nothing)"
                ),
            ));
        }
        Ok(RedisLedger {
            inner: Arc::new(Inner {
                conn,
                shards: keys,
                namespace: namespace.to_owned(),
                url: shown,
                read_only,
            }),
        })
    }
}

/// The error for a connection that could not be made to `shown`.
fn cannot_connect(e: ::redis::RedisError, shown: &str) -> Error {
    // A certificate that is not trusted will not become trusted by retrying.
    if let Some(why) = tls::failure(&e) {
        return Error::with_source(
            ErrorKind::Config,
            format!("cannot connect to redis at {shown}: {why}"),
            e,
        );
    }
    // Wrong credentials or settings will not fix themselves; anything else might.
    let kind = match e.kind() {
        RedisKind::AuthenticationFailed | RedisKind::InvalidClientConfig => ErrorKind::Config,
        _ => ErrorKind::Unavailable,
    };
    Error::with_source(kind, format!("cannot connect to redis at {shown}: {e}"), e)
}

/// Checks, with reads only, that one shard (or the unsharded namespace) holds nothing or a
/// ledger of the layout this build reads ([`ErrorKind::Corrupt`] for another layout or
/// damaged namespace keys, from the script), and answers how many of its keys exist.
async fn probe(conn: &Conn, keys: &Keys, namespace: &str) -> Result<i64> {
    let inv = prepare(&SCRIPTS.probe, keys);
    let values = run(&inv, conn, "probe", namespace).await?;
    let [Value::Int(existing)] = values.as_slice() else {
        return Err(Error::new(
            ErrorKind::Ledger,
            format!("the redis probe script answered an unexpected reply: {values:?}"),
        ));
    };
    Ok(*existing)
}

/// The namespace's shard count: the one it records, checked against `wanted` if set, or
/// `wanted` (1 if not set) for a namespace that records none; recorded at the first
/// read-write open of a sharded namespace. An unsharded namespace records no count.
async fn check_shards(
    conn: &Conn,
    namespace: &str,
    shown: &str,
    wanted: Option<u16>,
    read_only: bool,
) -> Result<u16> {
    let key = shards_key(namespace);
    let what = "reading the shard count";
    let mut c = conn.clone();
    let get = |mut c: Conn| {
        let key = key.clone();
        async move {
            let n: Option<String> = ::redis::cmd("GET")
                .arg(&key)
                .query_async(&mut c)
                .await
                .map_err(|e| map_redis(e, what, namespace))?;
            n.map(|n| {
                n.parse::<u16>()
                    .ok()
                    .filter(|n| (2..=MAX_SHARDS).contains(n))
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Corrupt,
                            format!(
                                "redis namespace {namespace:?} at {shown} records a shard count \
                                 of {n:?} in {key}, which this build does not write"
                            ),
                        )
                    })
            })
            .transpose()
        }
    };
    let mismatch = |found: u16, wanted: u16| {
        Error::config(format!(
            "redis namespace {namespace:?} at {shown} is split into {found} shard(s); it was \
             opened with {wanted} (a namespace keeps the count it was created with; leave \
             `shards` unset to use it)"
        ))
    };
    match (get(c.clone()).await?, wanted) {
        (Some(found), None) => Ok(found),
        (Some(found), Some(wanted)) if found == wanted => Ok(found),
        (Some(found), Some(wanted)) => Err(mismatch(found, wanted)),
        (None, None | Some(1)) => Ok(1),
        (None, Some(wanted)) => {
            // A new sharded namespace, unless the unsharded one already holds records, which
            // splitting would lose.
            if probe(conn, &Keys::new(namespace), namespace).await? > 0 {
                return Err(mismatch(1, wanted));
            }
            if read_only {
                return Ok(wanted);
            }
            let _: Option<String> = ::redis::cmd("SET")
                .arg(&key)
                .arg(wanted)
                .arg("NX")
                .query_async(&mut c)
                .await
                .map_err(|e| map_redis(e, what, namespace))?;
            // Another process may have recorded a count first: it must be the same.
            match get(c).await? {
                Some(found) if found == wanted => Ok(found),
                Some(found) => Err(mismatch(found, wanted)),
                None => Ok(wanted),
            }
        }
    }
}

/// Refuses a server whose `maxmemory-policy` may evict qupid's keys.
async fn check_eviction(conn: &Conn, url: &str) -> Result<()> {
    let mut conn = conn.clone();
    let reply: std::result::Result<HashMap<String, String>, _> = ::redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut conn)
        .await;
    let policy = match reply {
        Ok(map) => map.get("maxmemory-policy").cloned(),
        Err(e) if classify(&e) == ErrorKind::Unavailable => {
            return Err(Error::with_source(
                ErrorKind::Unavailable,
                format!("redis at {url} stopped answering while checking its eviction policy: {e}"),
                e,
            ));
        }
        Err(e) => {
            // Managed services often forbid or rename CONFIG: say so, and trust the operator.
            tracing::warn!(
                url,
                error = %e,
                "cannot read redis maxmemory-policy; make sure it is noeviction or volatile-*, \
                 or qupid's records may be evicted"
            );
            return Ok(());
        }
    };
    match policy {
        Some(p) if eviction_is_safe(&p) => Ok(()),
        Some(p) => Err(Error::config(format!(
            "redis at {url} has maxmemory-policy {p}, which may evict qupid's records \
             (completed keys would be processed again, leases would vanish); expected \
             noeviction or a volatile-* policy: run `CONFIG SET maxmemory-policy noeviction` \
             (and set it in redis.conf)"
        ))),
        None => {
            tracing::warn!(url, "redis did not report its maxmemory-policy");
            Ok(())
        }
    }
}

/// Whether a `maxmemory-policy` leaves qupid's keys alone: `noeviction`, or a `volatile-*`
/// policy, which evicts only keys with a TTL (qupid never sets one).
pub(super) fn eviction_is_safe(policy: &str) -> bool {
    let p = policy.to_ascii_lowercase();
    p == "noeviction" || p.starts_with("volatile-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policies_that_spare_persistent_keys_are_safe() {
        for ok in [
            "noeviction",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ] {
            assert!(eviction_is_safe(ok), "{ok}");
        }
        for bad in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "something-new",
        ] {
            assert!(!eviction_is_safe(bad), "{bad}");
        }
    }
}
