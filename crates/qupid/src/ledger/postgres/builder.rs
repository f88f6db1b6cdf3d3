//! Opening a [`PostgresLedger`]: the URL, the namespace, the pool and the schema.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::errors::{map_pg, map_pool, redact};
use super::schema::{self, check_namespace, Inspect};
use super::sql::Sql;
use super::tls;
use super::{Inner, PostgresLedger};
use crate::error::{Error, ErrorKind, Result};

/// Settings for opening a [`PostgresLedger`]; made by [`PostgresLedger::builder`].
///
/// ## Defaults
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`pool_size`](PostgresBuilder::pool_size) | 16 | connections at most, shared by every clone of the ledger |
/// | [`connect_timeout`](PostgresBuilder::connect_timeout) | 5 s | how long opening one connection may take (unless the URL sets `connect_timeout`) |
/// | [`read_only`](PostgresBuilder::read_only) | `false` | opens read-write: creates the namespace's schema, or upgrades an older one |
///
/// The connections' `application_name` is `qupid:<namespace>` unless the URL sets one, so an
/// administrator can tell them apart in `pg_stat_activity`.
///
/// ```no_run
/// use std::time::Duration;
/// use qupid::ledger::PostgresLedger;
///
/// # async fn example() -> qupid::Result<()> {
/// let ledger = PostgresLedger::builder("postgres://qupid@db.internal/app", "orders")
///     .pool_size(32)
///     .connect_timeout(Duration::from_secs(2))
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresBuilder {
    url: String,
    namespace: String,
    pool_size: usize,
    connect_timeout: Duration,
    read_only: bool,
}

impl std::fmt::Debug for PostgresBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBuilder")
            .field("url", &redact(&self.url))
            .field("namespace", &self.namespace)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl PostgresLedger {
    /// Connects to the PostgreSQL server at `url` and opens `namespace`, creating or
    /// upgrading its schema. The same as `PostgresLedger::builder(url, namespace).open()`.
    ///
    /// `url` is a `postgres://user:password@host:port/database?options` URL or a key-value
    /// string (`host=… user=… dbname=…`), as libpq takes them.
    ///
    /// TLS follows libpq's `sslmode` and `sslrootcert` (rustls; no OpenSSL library needed):
    /// `disable`; `prefer` (the default: encrypted if the server offers it, certificate not
    /// checked); `require` (always encrypted; the certificate is checked against
    /// `sslrootcert` if one is given); `verify-ca` (it must chain to `sslrootcert`, or to the
    /// system's roots); `verify-full` (and name the host). Managed services (RDS, Cloud
    /// SQL, Azure, Supabase…) want `?sslmode=verify-full&sslrootcert=/path/to/their-ca.pem`.
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::Config`] if `namespace` is not 1 to 48 of `a-z`, `0-9` and `_`, if
    ///   `url` cannot be parsed, if the server refuses the credentials, the database or
    ///   the privileges, or if TLS cannot be set up as `sslmode` asks (an unreadable
    ///   `sslrootcert`, a server certificate that does not chain to it or does not name the
    ///   host, a server without TLS): the message says which.
    /// - [`ErrorKind::Unavailable`] if the server cannot be reached; the message names the
    ///   URL (with any password hidden).
    /// - [`ErrorKind::Corrupt`] if the namespace's schema was written by a newer qupid, or
    ///   holds objects qupid did not make.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes closes the connections. A schema migration is
    /// one transaction: it is applied whole or not at all.
    pub async fn open(url: &str, namespace: &str) -> Result<Self> {
        Self::builder(url, namespace).open().await
    }

    /// Settings for opening the ledger at `url` in `namespace`; see [`PostgresBuilder`].
    pub fn builder(url: &str, namespace: &str) -> PostgresBuilder {
        PostgresBuilder {
            url: url.to_owned(),
            namespace: namespace.to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            read_only: false,
        }
    }
}

impl PostgresBuilder {
    /// How many connections the ledger opens at most (at least 1). Each concurrent call uses
    /// one for the length of its statement.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long opening one connection may take before the call fails as
    /// [`ErrorKind::Unavailable`]. A `connect_timeout` in the URL takes precedence.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Opens the namespace read-only, to look and never write: connecting creates nothing
    /// (no schema, however the namespace is spelled) and upgrades nothing, and every
    /// connection runs with `default_transaction_read_only = on`, so the server itself
    /// refuses a write. See [Read-only ledgers](crate::ledger#read-only-ledgers).
    ///
    /// [`open`](PostgresBuilder::open) then fails with [`ErrorKind::NotFound`] if the
    /// namespace has no schema (or an empty one), and with [`ErrorKind::Corrupt`] as a
    /// read-write connect does. A schema of an older qupid is read as it is (the versions
    /// differ in their indexes only). The ledger's write methods (`offer`, `start`, `renew`,
    /// `complete`, `fail`, `release`, `remove`, `retry`, `purge`) answer
    /// [`ErrorKind::ReadOnly`] without a round trip; `get`, `list`, `stats` and `now` read as
    /// usual. The role needs only `USAGE` on the schema and `SELECT` on its tables, and a
    /// hot standby (a read replica) serves it.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Connects and opens the namespace; see [`PostgresLedger::open`].
    ///
    /// # Errors
    ///
    /// As [`PostgresLedger::open`]; read-only, also [`ErrorKind::NotFound`] for a
    /// namespace with no schema (see [`read_only`](PostgresBuilder::read_only)).
    ///
    /// # Cancel safety
    ///
    /// As [`PostgresLedger::open`].
    pub async fn open(self) -> Result<PostgresLedger> {
        check_namespace(&self.namespace)?;
        let shown = redact(&self.url);
        let (url, tls) = tls::split(&self.url)?;
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                // The driver's cause names what it refused, such as an unknown option.
                let why = match std::error::Error::source(&e) {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                };
                Error::with_source(
                    ErrorKind::Config,
                    format!(
                        "expected a postgres url like postgres://user@host:5432/database, found \
                     {shown:?}: {why}"
                    ),
                    e,
                )
            })?;
        let timeout = match config.get_connect_timeout() {
            Some(t) => *t,
            None => {
                config.connect_timeout(self.connect_timeout);
                self.connect_timeout
            }
        };
        if config.get_application_name().is_none() {
            config.application_name(format!("qupid:{}", self.namespace));
        }
        // The ledger's statements are prepared once per connection. A generic plan, chosen
        // while a table is small, can keep scanning the whole table once it is large;
        // planning each execution for its arguments keeps every lookup on the key index.
        let mut options = with_custom_plans(config.get_options());
        if self.read_only {
            options.push_str(" -c default_transaction_read_only=on");
        }
        config.options(&options);
        config.ssl_mode(tls.pg_mode());
        let recycling = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls.client_config()? {
            Some(rustls) => Manager::from_config(config, MakeRustlsConnect::new(rustls), recycling),
            None => Manager::from_config(config, NoTls, recycling),
        };
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            // Room for name lookup and authentication on top of the TCP connect.
            .create_timeout(Some(timeout.saturating_mul(2)))
            .build()
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Config,
                    format!("cannot make a connection pool for {shown}: {e}"),
                    e,
                )
            })?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| map_pool(e, "connect", &shown, &self.namespace))?;
        let pg: &mut tokio_postgres::Client = &mut client;
        let inspected = if self.read_only {
            schema::readable(&*pg, &self.namespace).await
        } else {
            schema::migrate(pg, &self.namespace).await.map(|()| true)
        };
        let doing = if self.read_only {
            "reading the schema"
        } else {
            "schema migration"
        };
        let exists = inspected.map_err(|e| match e {
            Inspect::Pg(e) => map_pg(e, doing, &shown, &self.namespace),
            Inspect::Foreign(message) => schema::foreign(message),
        })?;
        drop(client);
        if !exists {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no qupid ledger here: namespace {:?} has no schema {} in postgres at                      {shown} (a read-only open creates none); nothing was changed",
                    self.namespace,
                    schema::schema_name(&self.namespace)
                ),
            ));
        }
        let quoted = format!("\"{}\"", schema::schema_name(&self.namespace));
        Ok(PostgresLedger {
            inner: Arc::new(Inner {
                pool,
                sql: Sql::new(&quoted),
                namespace: self.namespace,
                url: shown,
                read_only: self.read_only,
            }),
        })
    }
}

/// The connection's `options` with `plan_cache_mode=force_custom_plan` added, unless the URL
/// already chose a plan cache mode.
fn with_custom_plans(options: Option<&str>) -> String {
    match options {
        Some(o) if o.contains("plan_cache_mode") => o.to_owned(),
        Some(o) if !o.trim().is_empty() => format!("{o} -c plan_cache_mode=force_custom_plan"),
        _ => "-c plan_cache_mode=force_custom_plan".to_owned(),
    }
}

#[cfg(test)]
mod plan_tests {
    use super::with_custom_plans;

    #[test]
    fn custom_plans_are_added_unless_the_url_chose() {
        assert_eq!(
            with_custom_plans(None),
            "-c plan_cache_mode=force_custom_plan"
        );
        assert_eq!(
            with_custom_plans(Some("-c statement_timeout=5s")),
            "-c statement_timeout=5s -c plan_cache_mode=force_custom_plan"
        );
        let chosen = "-c plan_cache_mode=auto";
        assert_eq!(with_custom_plans(Some(chosen)), chosen);
    }
}
