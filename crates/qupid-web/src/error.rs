//! Errors: [`Error`] for building and serving a dashboard, and the answers a request gets
//! when something is wrong with it (a page or JSON, with a status).

use std::net::SocketAddr;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

/// What can go wrong building or serving a dashboard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option is out of range, or a non-loopback address has no token.
    #[error("{0}")]
    Config(String),
    /// The operating system gave no random bytes for the session and CSRF secrets.
    #[error("cannot make the dashboard's secrets: no random bytes from the system: {0}")]
    Random(String),
    /// The address could not be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("the dashboard's server failed: {0}")]
    Serve(std::io::Error),
}

/// A request that cannot be answered as asked: a status and a message for a person. It
/// answers as a small HTML page; [`ApiFail`] answers the same as JSON.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl Fail {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Fail {
        Fail {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::FORBIDDEN, message)
    }

    /// A ledger call failed: 503 when trying again may help (unreachable, busy), 500
    /// otherwise.
    pub(crate) fn ledger(doing: &str, e: &qupid::Error) -> Fail {
        let status = if e.is_transient() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Fail::new(status, format!("{doing}: {e}"))
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        let page = html! {
            (maud::DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { "qupid: " (self.status.as_u16()) " " (reason) } }
                body {
                    h1 { (self.status.as_u16()) " " (reason) }
                    p { (crate::text::shown(&self.message)) }
                }
            }
        };
        let mut response = (self.status, page.into_string()).into_response();
        crate::pages::secure_headers(response.headers_mut(), None);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response
    }
}

/// A [`Fail`] answered as JSON: `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiFail(pub(crate) Fail);

impl From<Fail> for ApiFail {
    fn from(f: Fail) -> Self {
        ApiFail(f)
    }
}

impl IntoResponse for ApiFail {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.0.message });
        let mut response = (self.0.status, axum::Json(body)).into_response();
        crate::pages::secure_headers(response.headers_mut(), None);
        response
    }
}
