//! Serving a dashboard by itself (what `qupid serve` runs): an address, the safety rules,
//! and a server that stops when told.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use qupid::LedgerAdmin;

use crate::dashboard::{check_token, Dashboard, Secret};
use crate::error::Error;

/// The address a dashboard listens on unless told otherwise: `127.0.0.1:7070`, this machine
/// only.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7070);

/// How to serve a dashboard: [`Server::bind`] and [`serve`] take it.
///
/// # Defaults
///
/// | option | default |
/// |---|---|
/// | [`bind`](Self::bind) | [`DEFAULT_BIND`], `127.0.0.1:7070` |
/// | [`allow_writes`](Self::allow_writes) | `false` (read-only) |
/// | [`token`](Self::token) | none; **required** to bind anything but a loopback address |
/// | [`ledger_name`](Self::ledger_name) | `"ledger"` |
/// | [`namespace`](Self::namespace) | none |
///
/// Rules [`Server::bind`] enforces: an address other than a loopback one (`127.0.0.0/8`,
/// `::1`) needs a token, or the server refuses to start; with no token (so on loopback), it
/// answers only requests whose `Host` is `localhost`, `127.0.0.1` or `[::1]`, so that a web
/// page cannot reach it through DNS rebinding.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    bind: SocketAddr,
    allow_writes: bool,
    token: Option<Secret>,
    ledger_name: Option<String>,
    namespace: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            bind: DEFAULT_BIND,
            allow_writes: false,
            token: None,
            ledger_name: None,
            namespace: None,
        }
    }
}

impl ServeConfig {
    /// The defaults.
    pub fn new() -> Self {
        ServeConfig::default()
    }

    /// The address to listen on (port 0: any free port; [`Server::local_addr`] tells which).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Whether retry, remove and purge are allowed.
    pub fn allow_writes(mut self, allow: bool) -> Self {
        self.allow_writes = allow;
        self
    }

    /// The token every request must carry; `None` for none (loopback only). An empty string
    /// counts as none, so an empty `QUPID_TOKEN` cannot open a dashboard to the network.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty()).map(Secret);
        self
    }

    /// How the pages name the ledger (its URL; a password in it is shown as `***`).
    pub fn ledger_name(mut self, name: &str) -> Self {
        self.ledger_name = Some(name.to_owned());
        self
    }

    /// The ledger's namespace, to show (and to label `/metrics` with); `None` for a ledger
    /// without one.
    pub fn namespace(mut self, namespace: Option<&str>) -> Self {
        self.namespace = namespace.map(str::to_owned);
        self
    }

    /// Checks the rules and makes the dashboard.
    fn dashboard<L: LedgerAdmin>(&self, ledger: L) -> Result<Dashboard<L>, Error> {
        if let Some(t) = &self.token {
            check_token(&t.0)?;
        } else if !self.bind.ip().is_loopback() {
            return Err(Error::Config(format!(
                "refusing to serve the dashboard on {}, an address other machines can reach, \
                 without a token: set one (`qupid serve --token TOKEN` or the QUPID_TOKEN \
                 environment variable), or bind 127.0.0.1",
                self.bind
            )));
        }
        let mut b = Dashboard::builder(ledger)
            .allow_writes(self.allow_writes)
            .local_only(self.token.is_none());
        if let Some(t) = &self.token {
            b = b.token(t.0.clone());
        }
        if let Some(n) = &self.ledger_name {
            b = b.ledger_name(n);
        }
        if let Some(ns) = &self.namespace {
            b = b.namespace(ns);
        }
        b.build()
    }
}

/// A dashboard listening on its address, not yet answering: [`run`](Server::run) serves it.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    router: Router,
    addr: SocketAddr,
    writes: bool,
    token: bool,
}

impl Server {
    /// Checks `config` against the safety rules, makes the dashboard over `ledger`, starts
    /// its throughput sampling and listens on the address.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an address other than loopback without a token, or a bad
    /// token; [`Error::Bind`] if the address cannot be listened on (in use, not this
    /// machine's); [`Error::Random`] if the system gives no random bytes.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the listener, if it was made.
    pub async fn bind<L: LedgerAdmin>(ledger: L, config: ServeConfig) -> Result<Server, Error> {
        let dashboard = config.dashboard(ledger)?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;
        dashboard.start_sampling();
        Ok(Server {
            listener,
            router: dashboard.router(),
            addr,
            writes: config.allow_writes,
            token: config.token.is_some(),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, `http://127.0.0.1:7070/` (a wildcard address is shown as `127.0.0.1`).
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}/", SocketAddr::new(ip, self.addr.port()))
    }

    /// One line for people: where, read-only or not, and whether a token is needed.
    pub fn describe(&self) -> String {
        format!(
            "the dashboard is at {} ({}{})",
            self.url(),
            if self.writes {
                "writes allowed"
            } else {
                "read-only"
            },
            if self.token {
                "; a token is required"
            } else {
                ""
            }
        )
    }

    /// Serves requests until `shutdown` completes, then lets the requests in flight finish.
    ///
    /// # Errors
    ///
    /// [`Error::Serve`] if the listener fails.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future closes the listener and drops the connections.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }
}

/// Serves a dashboard over `ledger` as `config` says until Ctrl-C or SIGTERM, logging its
/// URL with `tracing`: [`Server::bind`], then [`Server::run`] with [`shutdown_signal`].
///
/// # Errors
///
/// Those of [`Server::bind`] and [`Server::run`].
///
/// # Cancel safety
///
/// Dropping the future stops the server.
pub async fn serve<L: LedgerAdmin>(ledger: L, config: ServeConfig) -> Result<(), Error> {
    let server = Server::bind(ledger, config).await?;
    tracing::info!("{}", server.describe());
    server.run(shutdown_signal()).await
}

/// Completes at Ctrl-C (SIGINT) or SIGTERM. If the signals cannot be listened for, it never
/// completes.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
