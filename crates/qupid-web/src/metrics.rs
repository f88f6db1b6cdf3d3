//! `GET /metrics` (Prometheus text) and `GET /healthz`.

use std::fmt::Write as _;

use axum::extract::State as AxState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use qupid::{LedgerAdmin, State};

use crate::dashboard::AppState;
use crate::pages::secure_headers;

/// The gauges, read from [`LedgerAdmin::stats`] at each scrape. A ledger that cannot be read
/// answers 503, which Prometheus records as a failed scrape (`up == 0`).
pub(crate) async fn metrics<L: LedgerAdmin>(AxState(s): AppState<L>) -> Response {
    let stats = match s.ledger.stats().await {
        Ok(stats) => stats,
        Err(e) => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the ledger cannot be read: {e}\n"),
            )
        }
    };
    let queue = s
        .options
        .namespace
        .as_deref()
        .map(|ns| format!("queue=\"{}\",", label(ns)))
        .unwrap_or_default();
    let mut out = String::new();
    out.push_str(
        "# HELP qupid_ledger_records Records in the ledger, per state.\n\
         # TYPE qupid_ledger_records gauge\n",
    );
    for st in State::ALL {
        let _ = writeln!(
            out,
            "qupid_ledger_records{{{queue}state=\"{st}\"}} {}",
            stats.count(st)
        );
    }
    let queue_only = queue.trim_end_matches(',');
    let labels = if queue_only.is_empty() {
        String::new()
    } else {
        format!("{{{queue_only}}}")
    };
    let _ = write!(
        out,
        "# HELP qupid_ledger_expired_leases Queued and running records whose lease has expired \
         (their holder stopped renewing).\n\
         # TYPE qupid_ledger_expired_leases gauge\n\
         qupid_ledger_expired_leases{labels} {}\n",
        stats.expired
    );
    plain(StatusCode::OK, out)
}

/// `ok` when the ledger answers (its clock is read), 503 with the error otherwise.
pub(crate) async fn healthz<L: LedgerAdmin>(AxState(s): AppState<L>) -> Response {
    match s.ledger.now().await {
        Ok(_) => plain(StatusCode::OK, "ok\n".to_owned()),
        Err(e) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the ledger does not answer: {e}\n"),
        ),
    }
}

fn plain(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    secure_headers(r.headers_mut(), None);
    r
}

/// A Prometheus label value, escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
