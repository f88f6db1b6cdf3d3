//! A web dashboard for [qupid] ledgers: see and repair a ledger in a browser, from
//! your own app or from `qupid serve`.
//!
//! [`router`] (or [`Dashboard::builder`] for options) gives an [`axum::Router`] over any
//! [`LedgerAdmin`](qupid::LedgerAdmin) — an in-memory one too, watched from the process that runs its
//! pipeline. Mount it in your axum app under any path:
//!
//! ```
//! use std::sync::Arc;
//! use axum::body::Body;
//! use axum::http::Request;
//! use qupid::MemoryLedger;
//! use tower::ServiceExt; // for `oneshot`, to ask the app one question without a network
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The ledger your pipeline uses; an `Arc` of it is a ledger too.
//! let ledger = Arc::new(MemoryLedger::new());
//!
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "my app" }))
//!     .nest("/qupid", qupid_web::router(ledger.clone())); // read-only, no token
//!
//! // In your app: axum::serve(listener, app).await?
//! let response = app
//!     .oneshot(Request::get("/qupid/api/stats").body(Body::empty())?)
//!     .await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```
//!
//! # What it serves
//!
//! | path | what |
//! |---|---|
//! | `/` | overview: counts per state, expired leases, the oldest lease, a live throughput chart, the most recent dead records with their errors |
//! | `/list/{state}?prefix=P&after=CURSOR&limit=N` | one page of a state in key order, with a key-prefix search and cursor paging |
//! | `/show?key=K` | one record: version, attempts, token, lease expiry, last error; and its repairs |
//! | `/purge` | purge finished records by age, after a dry-run preview |
//! | `POST /retry`, `/remove`, `/purge` | the repairs, each confirmed on a page first (a forced remove twice) |
//! | `/api/stats`, `/api/list`, `/api/show` | JSON, in the shapes of the CLI's `--json` (`qupid --json stats` …) |
//! | `POST /api/remove`, `/api/retry`, `/api/purge` | JSON repairs, answered in the CLI's shapes |
//! | `/api/throughput`, `/api/session` | the chart's samples and rates; whether writes are allowed, and the CSRF token |
//! | `/metrics` | Prometheus text: `qupid_ledger_records{state="queued"}` … and `qupid_ledger_expired_leases` |
//! | `/healthz` | `ok` when the ledger answers, 503 otherwise |
//!
//! Pages are rendered on the server; the overview's little inline script polls
//! `/api/stats` and `/api/throughput` to stay live. Nothing is built with Node.
//!
//! # Safety
//!
//! - **Read-only by default.** Repairs need [`allow_writes`](DashboardBuilder::allow_writes);
//!   without it every POST answers 403 and pages show no buttons.
//! - **Writes are POSTs with a CSRF token** (a hidden form field, or the `x-qupid-csrf`
//!   header; 403 without it) **and a confirmation page**; a forced remove of a leased key
//!   asks twice. A request with the bearer token needs no CSRF token: no other site's page
//!   can send that header.
//! - **A token** ([`token`](DashboardBuilder::token)) is checked on every request, `/metrics`
//!   and `/healthz` included: an `Authorization: Bearer TOKEN` header, or a session cookie
//!   (`HttpOnly`, `SameSite=Strict`) set by the login form or by `?token=TOKEN` in a URL
//!   once. 401 otherwise.
//! - **[`Server`] binds `127.0.0.1:7070` by default** and refuses to bind any other address
//!   without a token. Without one, it answers only to `Host: localhost`, `127.0.0.1` or
//!   `[::1]` (no DNS rebinding).
//! - **Keys are escaped**: HTML-escaped, with control and invisible characters shown as
//!   visible escapes (`\n`, `\u{1b}`) as the CLI shows them. Every page has a
//!   Content-Security-Policy that runs only its own inline script.
//! - **Pages are capped**: at most [`page_limit`](DashboardBuilder::page_limit) records
//!   (500 by default), whatever `limit` asks for; at most 1,000 keys per JSON repair.
//!
//! # Serving it alone
//!
//! [`Server::bind`] and [`Server::run`] (or [`serve`], which runs until Ctrl-C) serve a
//! dashboard by itself, as `qupid --ledger URL serve` does:
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ledger = qupid::AnyLedger::open("sqlite://ledger.db", "default").await?;
//! let config = qupid_web::ServeConfig::new()
//!     .allow_writes(true)
//!     .ledger_name("sqlite://ledger.db");
//! let server = qupid_web::Server::bind(ledger, config).await?;
//! eprintln!("{}", server.describe());
//! server.run(qupid_web::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod api;
mod auth;
mod dashboard;
mod error;
pub mod json;
mod listing;
mod metrics;
mod pages;
mod sampler;
mod serve;
mod snapshot;
pub mod text;

pub use dashboard::{Dashboard, DashboardBuilder, MAX_PAGE_LIMIT};
pub use error::Error;
pub use serve::{serve, shutdown_signal, ServeConfig, Server, DEFAULT_BIND};

/// A read-only dashboard over `ledger` with the [defaults](DashboardBuilder#defaults): no
/// token, no writes. For options, [`Dashboard::builder`].
///
/// It never panics: on a system that gives no random bytes for the dashboard's secrets
/// (see [`Error::Random`]), the router answers every request with 500 and says why.
pub fn router<L: qupid::LedgerAdmin>(ledger: L) -> axum::Router {
    match Dashboard::builder(ledger).build() {
        Ok(d) => d.router(),
        Err(e) => {
            let message = e.to_string();
            axum::Router::new().fallback(move || {
                let m = message.clone();
                async move { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, m) }
            })
        }
    }
}
