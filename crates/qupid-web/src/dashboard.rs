//! The dashboard's options, its shared state, and the router that serves it.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use qupid::LedgerAdmin;

use crate::error::Error;
use crate::sampler::Sample;
use crate::snapshot::SnapshotCache;
use crate::{api, auth, metrics, pages};

/// The largest page size a builder accepts for [`DashboardBuilder::page_limit`].
pub const MAX_PAGE_LIMIT: usize = 10_000;

/// A dashboard over one ledger, built by [`Dashboard::builder`]; [`router`](Dashboard::router)
/// gives the [`axum::Router`] that serves it.
///
/// ```
/// use qupid::MemoryLedger;
///
/// let dashboard = qupid_web::Dashboard::builder(MemoryLedger::new())
///     .allow_writes(true)
///     .token("s3cret-token")
///     .ledger_name("memory: (this process)")
///     .build()?;
/// let app: axum::Router = axum::Router::new().nest("/qupid", dashboard.router());
/// # drop(app);
/// # Ok::<(), qupid_web::Error>(())
/// ```
#[derive(Debug)]
pub struct Dashboard<L> {
    shared: Arc<Shared<L>>,
}

impl<L> Clone for Dashboard<L> {
    fn clone(&self) -> Self {
        Dashboard {
            shared: self.shared.clone(),
        }
    }
}

impl<L: LedgerAdmin> Dashboard<L> {
    /// A builder for a dashboard over `ledger`. Pass an `Arc` of a ledger your app also uses
    /// (`Arc<L>` is a [`LedgerAdmin`](qupid::LedgerAdmin) too), or a ledger of its own.
    pub fn builder(ledger: L) -> DashboardBuilder<L> {
        DashboardBuilder {
            ledger,
            options: Options::default(),
            token: None,
        }
    }

    /// The router: pages at `/`, `/list/{state}`, `/show`, `/purge`; the JSON API under
    /// `/api`; `/metrics` and `/healthz`. Mount it with [`Router::nest`] under any path (its
    /// links follow the path it is mounted at), or serve it as it is.
    ///
    /// Throughput is sampled in the background from the first request on, in a task that
    /// ends once every router of this dashboard is dropped.
    pub fn router(&self) -> Router {
        let s = self.shared.clone();
        Router::new()
            .route("/", get(pages::overview::page::<L>))
            .route("/list/{state}", get(pages::list::page::<L>))
            .route("/show", get(pages::record::page::<L>))
            .route(
                "/purge",
                get(pages::repair::purge_form::<L>).post(pages::repair::purge::<L>),
            )
            .route("/remove", post(pages::repair::remove::<L>))
            .route("/retry", post(pages::repair::retry::<L>))
            .route("/login", get(auth::login_form::<L>).post(auth::login::<L>))
            .route("/api/stats", get(api::stats::<L>))
            .route("/api/list", get(api::list::<L>))
            .route("/api/show", get(api::show::<L>))
            .route("/api/throughput", get(api::throughput::<L>))
            .route("/api/session", get(api::session::<L>))
            .route("/api/remove", post(api::remove::<L>))
            .route("/api/retry", post(api::retry::<L>))
            .route("/api/purge", post(api::purge::<L>))
            .route("/metrics", get(metrics::metrics::<L>))
            .route("/healthz", get(metrics::healthz::<L>))
            .fallback(pages::not_found)
            .layer(axum::middleware::from_fn_with_state(
                s.clone(),
                auth::guard::<L>,
            ))
            .with_state(s)
    }

    /// The ledger this dashboard shows.
    pub fn ledger(&self) -> &L {
        &self.shared.ledger
    }

    /// Starts sampling throughput now rather than at the first request. Must be called
    /// within a tokio runtime; calling it again does nothing.
    pub fn start_sampling(&self) {
        crate::sampler::start(&self.shared);
    }
}

/// Builds a [`Dashboard`].
///
/// # Defaults
///
/// | option | default |
/// |---|---|
/// | [`allow_writes`](Self::allow_writes) | `false`: read-only, every POST answers 403 |
/// | [`token`](Self::token) | none: no login (fine on 127.0.0.1; put your app's own auth in front otherwise) |
/// | [`local_only`](Self::local_only) | `false`: any `Host` header |
/// | [`ledger_name`](Self::ledger_name) | `"ledger"` |
/// | [`namespace`](Self::namespace) | none |
/// | [`page_limit`](Self::page_limit) | 500 records per page at most (50 unless asked) |
/// | [`sample_every`](Self::sample_every) | 2 s |
/// | [`history`](Self::history) | 300 samples (10 minutes at 2 s) |
/// | [`refresh_every`](Self::refresh_every) | 2 s, for the pages' live refresh |
/// | [`scan_limit`](Self::scan_limit) | 10,000 dead records read to find the most recent |
#[derive(Debug)]
pub struct DashboardBuilder<L> {
    ledger: L,
    options: Options,
    token: Option<Secret>,
}

impl<L: LedgerAdmin> DashboardBuilder<L> {
    /// Whether the repair actions (retry, remove, purge) are allowed. When `false`, pages
    /// show no buttons and every POST answers 403.
    pub fn allow_writes(mut self, allow: bool) -> Self {
        self.options.allow_writes = allow;
        self
    }

    /// Requires this token on every request: an `Authorization: Bearer TOKEN` header, or the
    /// session cookie that the login form (or `?token=TOKEN` in a URL, once) sets. Visible
    /// ASCII, 1 to 256 characters ([`build`](Self::build) refuses anything else).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret(token.into()));
        self
    }

    /// Accepts only requests whose `Host` is `localhost`, `127.0.0.1` or `[::1]` (any port):
    /// a defence against DNS rebinding, for a dashboard on a loopback address with no token
    /// (what [`Server`](crate::Server) does then). Others answer 403.
    pub fn local_only(mut self, local: bool) -> Self {
        self.options.local_only = local;
        self
    }

    /// How pages, `/api/stats` and `/metrics` name the ledger: its URL, say. Any password in
    /// it is shown as `***` ([`qupid::redact_url`]).
    pub fn ledger_name(mut self, name: &str) -> Self {
        self.options.ledger_name = qupid::redact_url(name);
        self
    }

    /// The ledger's namespace, shown in pages and `/api/stats`, and the `queue` label of
    /// `/metrics` (the label the pipeline's own metrics carry).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.options.namespace = Some(namespace.to_owned());
        self
    }

    /// The most records one page shows (1 to [`MAX_PAGE_LIMIT`]); asking for more gives
    /// this many.
    pub fn page_limit(mut self, limit: usize) -> Self {
        self.options.page_limit = limit;
        self
    }

    /// How often the background task samples [`LedgerAdmin::stats`] for the throughput chart (at
    /// least 100 ms).
    pub fn sample_every(mut self, every: Duration) -> Self {
        self.options.sample_every = every;
        self
    }

    /// How many samples the chart keeps (2 to 10,000).
    pub fn history(mut self, samples: usize) -> Self {
        self.options.history = samples;
        self
    }

    /// How often the pages' script polls the JSON API (at least 100 ms).
    pub fn refresh_every(mut self, every: Duration) -> Self {
        self.options.refresh_every = every;
        self
    }

    /// How many dead records the overview reads, at most, to find the most recent ones
    /// (the ledger lists them in key order, not by time).
    pub fn scan_limit(mut self, records: usize) -> Self {
        self.options.scan_limit = records;
        self
    }

    /// The dashboard.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a token that is empty, longer than 256 characters or holds
    /// anything but visible ASCII, or an option out of its range;
    /// [`Error::Random`] if the operating system gives no random bytes for the session and
    /// CSRF secrets.
    pub fn build(self) -> Result<Dashboard<L>, Error> {
        let mut options = self.options;
        if let Some(token) = &self.token {
            check_token(&token.0)?;
        }
        options.token = self.token;
        if !(1..=MAX_PAGE_LIMIT).contains(&options.page_limit) {
            return Err(Error::Config(format!(
                "the page limit must be from 1 to {MAX_PAGE_LIMIT}, found {}",
                options.page_limit
            )));
        }
        if !(2..=10_000).contains(&options.history) {
            return Err(Error::Config(format!(
                "the history must be from 2 to 10000 samples, found {}",
                options.history
            )));
        }
        options.sample_every = options.sample_every.max(Duration::from_millis(100));
        options.refresh_every = options.refresh_every.max(Duration::from_millis(100));
        let secrets = Secrets {
            csrf: random_hex(16)?,
            session: random_hex(32)?,
        };
        Ok(Dashboard {
            shared: Arc::new(Shared {
                ledger: self.ledger,
                options,
                secrets,
                samples: Mutex::new(VecDeque::new()),
                sampler_started: AtomicBool::new(false),
                snapshot: SnapshotCache::default(),
            }),
        })
    }
}

/// The token rule: visible ASCII (it travels in a header and a cookie), 1 to 256 characters.
pub(crate) fn check_token(token: &str) -> Result<(), Error> {
    if token.is_empty() || token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Config(
            "a token must be 1 to 256 visible ASCII characters (no spaces)".to_owned(),
        ));
    }
    Ok(())
}

/// `bytes` random bytes from the operating system, as hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::Random(e.to_string()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// What a [`DashboardBuilder`] sets.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) allow_writes: bool,
    pub(crate) token: Option<Secret>,
    pub(crate) local_only: bool,
    pub(crate) ledger_name: String,
    pub(crate) namespace: Option<String>,
    pub(crate) page_limit: usize,
    pub(crate) sample_every: Duration,
    pub(crate) history: usize,
    pub(crate) refresh_every: Duration,
    pub(crate) scan_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_writes: false,
            token: None,
            local_only: false,
            ledger_name: "ledger".to_owned(),
            namespace: None,
            page_limit: 500,
            sample_every: Duration::from_secs(2),
            history: 300,
            refresh_every: Duration::from_secs(2),
            scan_limit: 10_000,
        }
    }
}

impl Options {
    /// The token, if one is required.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.0.as_str())
    }
}

/// A token: shown as `***` by `Debug`, so that logging a dashboard or its configuration
/// never prints it.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Secrets made when the dashboard is built: they last as long as it does.
pub(crate) struct Secrets {
    /// Every form that writes carries it; a POST without it answers 403.
    pub(crate) csrf: String,
    /// The session cookie's value: having it proves its holder once gave the token.
    pub(crate) session: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { csrf: \"***\", session: \"***\" }")
    }
}

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct Shared<L> {
    pub(crate) ledger: L,
    pub(crate) options: Options,
    pub(crate) secrets: Secrets,
    pub(crate) samples: Mutex<VecDeque<Sample>>,
    pub(crate) sampler_started: AtomicBool,
    pub(crate) snapshot: SnapshotCache,
}

/// The shared state as handlers receive it.
pub(crate) type AppState<L> = axum::extract::State<Arc<Shared<L>>>;
