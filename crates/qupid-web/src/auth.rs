//! Who may ask: the token (bearer header, session cookie, login form, `?token=` once), the
//! `Host` check against DNS rebinding, and the CSRF check on writes.

use std::sync::Arc;

use axum::extract::{OriginalUri, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::html;
use qupid::LedgerAdmin;

use crate::dashboard::{AppState, Shared};
use crate::error::Fail;
use crate::pages::{self, home, Base};
use crate::text;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "qupid_session";

/// The header a script or API client sends the CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-qupid-csrf";

/// Marks a request that carried the right bearer token: it cannot have come from another
/// site's form (a browser never adds that header by itself), so it needs no CSRF token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ByBearer;

/// Runs before every route: finds the path the router is mounted at, checks the `Host`
/// (when `local_only`) and the token (when one is set).
pub(crate) async fn guard<L: LedgerAdmin>(
    State(s): State<Arc<Shared<L>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let base = base_path(&req);
    req.extensions_mut().insert(Base(base.clone()));
    if s.options.local_only && !host_is_local(req.headers()) {
        return Fail::forbidden(
            "this dashboard answers only to localhost, 127.0.0.1 or [::1] (the request's Host \
             header names another host)",
        )
        .into_response();
    }
    let Some(token) = s.options.token() else {
        return next.run(req).await;
    };
    if let Some(given) = bearer(req.headers()) {
        if ct_eq(given.as_bytes(), token.as_bytes()) {
            req.extensions_mut().insert(ByBearer);
            return next.run(req).await;
        }
        return unauthorized(&req, &base, "wrong token");
    }
    if cookie(req.headers(), COOKIE)
        .is_some_and(|c| ct_eq(c.as_bytes(), s.secrets.session.as_bytes()))
    {
        return next.run(req).await;
    }
    if let Some(given) = query_token(req.uri().query()) {
        if req.method() == Method::GET && ct_eq(given.as_bytes(), token.as_bytes()) {
            // Once: set the cookie, and send the browser to the same page without the token
            // in its address bar and history.
            let rest = strip_token(req.uri().query().unwrap_or_default());
            // One leading slash: `//host/…` in a Location header would leave this site.
            let path = format!("{base}/{}", req.uri().path().trim_start_matches('/'));
            let to = if rest.is_empty() {
                path
            } else {
                format!("{path}?{rest}")
            };
            return with_session(redirect(&to), &s, &base);
        }
        return unauthorized(&req, &base, "wrong token");
    }
    if req.uri().path() == "/login" {
        return next.run(req).await;
    }
    unauthorized(&req, &base, "")
}

/// `GET /login`: the login form (or the overview, when no token is needed).
pub(crate) async fn login_form<L: LedgerAdmin>(
    State(s): AppState<L>,
    axum::Extension(Base(base)): axum::Extension<Base>,
) -> Response {
    if s.options.token().is_none() {
        return redirect(&home(&base));
    }
    login_page(&base, "", StatusCode::OK)
}

/// `POST /login`: checks the token from the form; sets the session cookie if right.
pub(crate) async fn login<L: LedgerAdmin>(
    State(s): AppState<L>,
    axum::Extension(Base(base)): axum::Extension<Base>,
    body: String,
) -> Response {
    let Some(token) = s.options.token() else {
        return redirect(&home(&base));
    };
    let given = text::parse_pairs(&body)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "token"))
        .map(|(_, v)| v)
        .unwrap_or_default();
    if ct_eq(given.as_bytes(), token.as_bytes()) {
        with_session(redirect(&home(&base)), &s, &base)
    } else {
        login_page(&base, "wrong token", StatusCode::UNAUTHORIZED)
    }
}

/// 401: the login form for a page, a short JSON answer for the API and plain text for
/// `/metrics` and `/healthz`; each with `WWW-Authenticate: Bearer`.
fn unauthorized(req: &Request, base: &str, why: &str) -> Response {
    let path = req.uri().path();
    let message = if why.is_empty() {
        "a token is required: send `Authorization: Bearer TOKEN`, or log in".to_owned()
    } else {
        format!("{why}: send `Authorization: Bearer TOKEN`, or log in")
    };
    let mut response = if path.starts_with("/api/") {
        let body = serde_json::json!({ "error": message });
        (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
    } else if path == "/metrics" || path == "/healthz" {
        (StatusCode::UNAUTHORIZED, format!("{message}\n")).into_response()
    } else {
        login_page(base, why, StatusCode::UNAUTHORIZED)
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"qupid\""),
    );
    response
}

fn login_page(base: &str, why: &str, status: StatusCode) -> Response {
    let body = html! {
        h1 { "Log in" }
        p { "This dashboard needs its token (the one it was started with: "
            code { "--token" } " or " code { "QUPID_TOKEN" } ")." }
        @if !why.is_empty() { p.error { (why) } }
        form method="post" action={ (base) "/login" } {
            label { "token " input type="password" name="token" autocomplete="current-password" autofocus; }
            " "
            button type="submit" { "log in" }
        }
    };
    let mut response = pages::bare("log in", body).into_response();
    *response.status_mut() = status;
    response
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn with_session<L>(mut response: Response, s: &Shared<L>, base: &str) -> Response {
    let path = if base.is_empty() { "/" } else { base };
    let cookie = format!(
        "{COOKIE}={}; Path={path}; HttpOnly; SameSite=Strict",
        s.secrets.session
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// The path the router is mounted at (`""` at the root, `/qupid` when nested there), from
/// the request's original URI and the part the router sees.
fn base_path(req: &Request) -> String {
    let inner = req.uri().path();
    let original = req
        .extensions()
        .get::<OriginalUri>()
        .map_or(inner, |o| o.0.path());
    let base = original.strip_suffix(inner).unwrap_or_else(|| {
        // Nested at `/qupid`, a request for `/qupid` reaches the router as `/`.
        if inner == "/" {
            original
        } else {
            ""
        }
    });
    base.trim_end_matches('/').to_owned()
}

fn host_is_local(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn query_token(query: Option<&str>) -> Option<String> {
    text::parse_pairs(query?)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

fn strip_token(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some("token"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether `a` and `b` are equal, in a time that does not depend on where they differ.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The checks every write makes: writes allowed, and the CSRF token given (in the form's
/// `csrf` field or the `x-qupid-csrf` header) unless the request carried the bearer token.
pub(crate) fn check_write<L>(
    s: &Shared<L>,
    headers: &HeaderMap,
    by_bearer: bool,
    form_csrf: Option<&str>,
) -> Result<(), Fail> {
    if !s.options.allow_writes {
        return Err(Fail::forbidden(
            "this dashboard is read-only: start it with writes allowed (`qupid serve \
             --allow-writes`, or `allow_writes(true)` in code) to retry, remove or purge",
        ));
    }
    if by_bearer {
        return Ok(());
    }
    let given = form_csrf.or_else(|| headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()));
    match given {
        Some(t) if ct_eq(t.as_bytes(), s.secrets.csrf.as_bytes()) => Ok(()),
        _ => Err(Fail::forbidden(
            "missing or wrong CSRF token: reload the page and try again",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts_are_told_apart() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(v).unwrap());
            host_is_local(&m)
        };
        assert!(h("localhost:7070"));
        assert!(h("127.0.0.1:7070"));
        assert!(h("[::1]:7070"));
        assert!(h("LOCALHOST"));
        assert!(!h("evil.example:7070"));
        assert!(!h("127.0.0.1.evil.example"));
        assert!(!host_is_local(&HeaderMap::new()));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert_eq!(strip_token("a=1&token=x&b=2"), "a=1&b=2");
        assert_eq!(strip_token("token=x"), "");
    }
}
