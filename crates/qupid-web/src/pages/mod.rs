//! The HTML pages: server-rendered with maud (every value escaped unless marked), one
//! layout, a little inline CSS and, on the overview, a little inline script that polls the
//! JSON API. The script and style carry a per-response nonce that the Content-Security-Policy
//! requires, so nothing else on a page can run.

pub(crate) mod list;
pub(crate) mod overview;
pub(crate) mod record;
pub(crate) mod repair;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use qupid::clock::Timestamp;
use qupid::ledger::Record;
use qupid::State;

use crate::dashboard::{random_hex, Shared};
use crate::error::Fail;
use crate::text::{self, url_encode};

/// The path the router is mounted at: `""` at the root, `/qupid` when nested there. Links
/// start with it.
#[derive(Debug, Clone)]
pub(crate) struct Base(pub(crate) String);

const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/live.js");

/// Security headers for every answer; `nonce` is the one the page's inline style and
/// script carry, if it has any.
pub(crate) fn secure_headers(headers: &mut HeaderMap, nonce: Option<&str>) {
    let csp = match nonce {
        Some(n) => format!(
            "default-src 'none'; script-src 'nonce-{n}'; style-src 'nonce-{n}'; \
             connect-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'"
        ),
        None => "default-src 'none'; form-action 'self'; frame-ancestors 'none'; \
                 base-uri 'none'"
            .to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Which tab of the navigation is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    List(State),
    Purge,
    None,
}

/// A full page: header, navigation, `body`. The live script runs on pages that ask for it.
pub(crate) fn layout<L>(
    s: &Shared<L>,
    base: &str,
    title: &str,
    nav: Nav,
    live: bool,
    body: Markup,
) -> Response {
    let nonce = match random_hex(16) {
        Ok(n) => n,
        Err(e) => {
            return Fail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    };
    let o = &s.options;
    let tab = |n: Nav, href: String, label: &str| {
        html! { a href=(href) class=@if n == nav { "tab on" } @else { "tab" } { (label) } }
    };
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "qupid · " (title) }
                style nonce=(nonce) { (PreEscaped(STYLE)) }
            }
            body data-base=(base) data-refresh-ms=(o.refresh_every.as_millis()) {
                header {
                    a.brand href=(home(base)) { "qupid" }
                    span.ledger title="ledger" { (text::shown(&o.ledger_name)) }
                    @if let Some(ns) = &o.namespace {
                        span.ns title="namespace" { "namespace " (text::shown(ns)) }
                    }
                    @if o.allow_writes {
                        span.mode.writes { "writes allowed" }
                    } @else {
                        span.mode { "read-only" }
                    }
                }
                nav {
                    (tab(Nav::Overview, home(base), "Overview"))
                    @for st in State::ALL {
                        (tab(Nav::List(st), format!("{base}/list/{st}"), title_case(st)))
                    }
                    (tab(Nav::Purge, format!("{base}/purge"), "Purge"))
                }
                main { (body) }
                @if live {
                    script nonce=(nonce) { (PreEscaped(SCRIPT)) }
                }
            }
        }
    };
    html_response(page, Some(&nonce))
}

/// A page without the dashboard's header (the login form).
pub(crate) fn bare(title: &str, body: Markup) -> Response {
    let nonce = match random_hex(16) {
        Ok(n) => n,
        Err(e) => {
            return Fail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    };
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "qupid · " (title) }
                style nonce=(nonce) { (PreEscaped(STYLE)) }
            }
            body { main.narrow { (body) } }
        }
    };
    html_response(page, Some(&nonce))
}

fn html_response(page: Markup, nonce: Option<&str>) -> Response {
    let mut response = page.into_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(response.headers_mut(), nonce);
    response
}

/// Any other path: 404.
pub(crate) async fn not_found() -> Fail {
    Fail::not_found("no such page")
}

/// "Queued", "Running", ...
pub(crate) fn title_case(state: State) -> &'static str {
    match state {
        State::Queued => "Queued",
        State::Running => "Running",
        State::Completed => "Completed",
        State::Dead => "Dead",
    }
}

/// The overview's path: the mount path itself when nested (axum's `nest("/qupid", …)`
/// answers `/qupid`, not `/qupid/`), `/` at the root.
pub(crate) fn home(base: &str) -> String {
    if base.is_empty() {
        "/".to_owned()
    } else {
        base.to_owned()
    }
}

/// The link to a record's page.
pub(crate) fn record_href(base: &str, key: &str) -> String {
    format!("{base}/show?key={}", url_encode(key))
}

/// A time on the ledger's clock, as "in 12s" with the UTC time as a tooltip.
pub(crate) fn when(at: Option<Timestamp>, now: Timestamp) -> Markup {
    match at {
        Some(at) => {
            html! { time datetime=(text::utc(at)) title=(text::utc(at)) { (text::relative(at, now)) } }
        }
        None => html! { span.none { "-" } },
    }
}

/// The hidden CSRF field every write form carries.
pub(crate) fn csrf_field<L>(s: &Shared<L>) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.secrets.csrf); }
}

/// A one-button form that posts `fields` to `action`.
pub(crate) fn button<L>(
    s: &Shared<L>,
    action: &str,
    fields: &[(&str, &str)],
    label: &str,
    class: &str,
) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(s))
            @for (name, value) in fields {
                input type="hidden" name=(name) value=(value);
            }
            button type="submit" class=(class) { (label) }
        }
    }
}

/// A table of records (list pages, the overview's recent dead).
pub(crate) fn records_table<L>(
    s: &Shared<L>,
    base: &str,
    state: State,
    records: &[Record],
    now: Timestamp,
    actions: bool,
) -> Markup {
    let leased = state.is_leased();
    html! {
        table.records {
            thead { tr {
                th { "key" } th { "version" } th.num { "attempts" } th.num { "token" }
                th { @if leased { "lease expires" } @else { "finished" } }
                @if state == State::Dead || leased { th { "last error" } }
                @if actions { th {} }
            } }
            tbody {
                @for r in records {
                    tr {
                        td.key { a href=(record_href(base, r.key.as_str())) { (text::shown(r.key.as_str())) } }
                        td.version { @match &r.version { Some(v) => (crate::text::Shown::short(v.as_str(), 40)), None => span.none { "-" } } }
                        td.num { (r.attempts) }
                        td.num { (r.token.get()) }
                        td { @if leased { (when(r.expires_at, now)) } @else { (when(r.finished_at, now)) } }
                        @if state == State::Dead || leased {
                            td.error { @match &r.last_error { Some(e) => (crate::text::Shown::short(e, 120)), None => span.none { "-" } } }
                        }
                        @if actions {
                            td.actions {
                                @if state == State::Dead {
                                    (button(s, &format!("{base}/retry"), &[("key", r.key.as_str())], "retry", ""))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Reads a request's query string strictly.
pub(crate) fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, Fail> {
    text::parse_pairs(query.unwrap_or_default()).map_err(Fail::bad_request)
}

/// The value of `name` in `pairs`.
pub(crate) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A key from a request, checked: present, non-empty, at most 1024 bytes.
pub(crate) fn key_param(pairs: &[(String, String)]) -> Result<qupid::Key, Fail> {
    let k = param(pairs, "key").ok_or_else(|| Fail::bad_request("expected a `key` parameter"))?;
    qupid::Key::new(k).map_err(|e| Fail::bad_request(format!("{e}: not a key")))
}
