//! Shared by the route tests: a seeded ledger, requests through the router without a
//! network, and the tests themselves, run on every ledger by `route_tests!`.

#![allow(dead_code, unreachable_pub)] // each test file uses its own part

pub mod servers;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use qupid::ledger::{Claim, Failure, Offered, Record};
use qupid::{Key, LedgerAdmin, Offer, Policy, Version};
use qupid_web::Dashboard;
use serde_json::Value;
use tower::ServiceExt;

/// A ledger for one test, and whatever cleans it up when dropped.
pub struct Fx<L> {
    pub ledger: Arc<L>,
    pub namespace: Option<String>,
    pub _cleanup: Box<dyn std::any::Any + Send>,
}

/// A key, checked.
pub fn key(s: &str) -> Key {
    Key::new(s).expect("a valid key")
}

/// The error of the first dead record: markup, a newline, an escape character.
pub const DEAD_ERROR: &str = "boom <script>alert(1)</script>\nline two \u{1b}[31m";

/// The odd key seeded: markup, quotes, a newline.
pub const ODD_KEY: &str = "odd/<b>\"x\"&'y'\nz";

/// The completed keys seeded, in byte order, for the prefix tests.
pub const COMPLETED: [&str; 9] = [
    ODD_KEY,
    "order",
    "orders",
    "orders/1",
    "orders/10",
    "orders/2",
    "orders/3",
    "orders/4",
    "orders0",
];

/// Seeds `l`: 3 queued (one under a lease already expired), 1 running (`run/1`), the
/// completed keys of [`COMPLETED`], and 2 dead (`dead/1` with [`DEAD_ERROR`], `dead/2`).
/// Also a running key `orders/5` so a prefix search over completed keys must skip it.
pub async fn seed<L: LedgerAdmin>(l: &L) {
    let mut p = Policy::default();
    p.max_attempts = 1;
    // The expired lease first, short, and waited out.
    let mut short = p.clone();
    short.lease = Duration::from_millis(20);
    accept(l, &short, "queued/expired").await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    accept(l, &p, "queued/1").await;
    accept(l, &p, "queued/2").await;
    let run = accept(l, &p, "run/1").await;
    start(l, &p, &run).await;
    let other = accept(l, &p, "orders/5").await;
    start(l, &p, &other).await;
    for k in COMPLETED {
        let c = accept(l, &p, k).await;
        start(l, &p, &c).await;
        let done = l.complete(&[c]).await.expect("complete");
        assert!(done[0].is_ok(), "complete {k:?}: {done:?}");
    }
    for (k, e) in [("dead/1", DEAD_ERROR), ("dead/2", "timed out")] {
        let c = accept(l, &p, k).await;
        start(l, &p, &c).await;
        let failed = l
            .fail(
                &p,
                &[Failure {
                    claim: c,
                    error: e.to_owned(),
                }],
            )
            .await
            .expect("fail");
        assert!(failed[0].is_ok(), "fail {k:?}: {failed:?}");
    }
    let s = l.stats().await.expect("stats");
    assert_eq!(
        (s.queued, s.running, s.completed, s.dead, s.expired),
        (3, 2, 9, 2, 1),
        "seeded: {s:?}"
    );
}

async fn accept<L: LedgerAdmin>(l: &L, p: &Policy, k: &str) -> Claim {
    let offer = Offer::new(key(k)).with_version(Version::new("v1").expect("a version"));
    let out = l.offer(p, &[offer]).await.expect("offer");
    match &out[0] {
        Offered::Accepted(lease) => Claim {
            key: key(k),
            token: lease.token,
        },
        other => panic!("offer {k:?}: {other:?}"),
    }
}

async fn start<L: LedgerAdmin>(l: &L, p: &Policy, c: &Claim) {
    let out = l.start(p, std::slice::from_ref(c)).await.expect("start");
    assert!(out[0].is_ok(), "start {:?}: {out:?}", c.key);
}

/// The record of `k`, if any.
pub async fn record<L: LedgerAdmin>(l: &L, k: &str) -> Option<Record> {
    l.get(&key(k)).await.expect("get")
}

/// An answer: status, headers, body as text.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// Sends `req` through `app`.
pub async fn send(app: &Router, req: Request<Body>) -> Answer {
    let response = app.clone().oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
    }
}

/// `GET uri`.
pub async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).expect("request")).await
}

/// `POST uri` with a form body.
pub async fn post_form(app: &Router, uri: &str, form: &str) -> Answer {
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .expect("request");
    send(app, req).await
}

/// `POST uri` with a JSON body and extra headers.
pub async fn post_json(app: &Router, uri: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(
        app,
        req.body(Body::from(body.to_string())).expect("request"),
    )
    .await
}

/// The CSRF token of a dashboard.
pub async fn csrf(app: &Router) -> String {
    let a = get(app, "/api/session").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.json()["csrf"].as_str().expect("csrf").to_owned()
}

/// `s` percent-encoded for a query string.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The keys of a `list` answer, and its `next`.
pub fn keys_and_next(v: &Value) -> (Vec<String>, Option<String>) {
    let keys = v["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["key"].as_str().expect("key").to_owned())
        .collect();
    (keys, v["next"].as_str().map(str::to_owned))
}

/// A dashboard over the fixture's ledger, with writes allowed or not.
pub fn app<L: LedgerAdmin>(fx: &Fx<L>, writes: bool) -> Router {
    let mut b = Dashboard::builder(fx.ledger.clone()).allow_writes(writes);
    if let Some(ns) = &fx.namespace {
        b = b.namespace(ns);
    }
    b.build().expect("a dashboard").router()
}

/// Runs every route test against a fixture: `route_tests!(path::to::fixture)`, where the
/// fixture is `async fn() -> Fx<L>`.
#[macro_export]
macro_rules! route_tests {
    ($fixture:path) => {
        $crate::route_tests!(@each $fixture;
            overview_shows_the_counts_escaped,
            api_stats_has_the_cli_shape,
            lists_page_through_a_prefix_by_cursor,
            list_pages_are_html_with_search_and_paging,
            bad_list_requests_are_refused_or_capped,
            records_show_everything_and_bad_keys_are_refused,
            writes_are_forbidden_when_read_only,
            writes_need_the_csrf_token,
            retry_asks_first_then_retries,
            a_forced_remove_asks_twice,
            purge_previews_then_purges,
            the_json_repairs_answer_in_the_cli_shapes,
            a_token_is_checked_on_every_request,
            metrics_and_health,
            mounted_under_a_path_links_follow,
            throughput_is_sampled_in_the_background,
            unknown_paths_and_foreign_hosts_are_refused,
        );
    };
    (@each $fixture:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::support::routes::$name($fixture().await).await;
            }
        )*
    };
}

pub mod routes;
