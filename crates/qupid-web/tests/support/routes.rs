//! The route tests, one function each, generic over the ledger.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use qupid::{Ledger, LedgerAdmin, State};
use qupid_web::Dashboard;
use serde_json::json;

use super::*;

/// The overview shows the seeded counts, the expired lease, the recent dead records with
/// their errors escaped, and carries its script under a nonce the CSP names.
pub async fn overview_shows_the_counts_escaped<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let app = app(&fx, false);
    let a = get(&app, "/").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    for (state, n) in [("queued", 3), ("running", 2), ("completed", 9), ("dead", 2)] {
        assert!(
            a.body.contains(&format!("id=\"count-{state}\">{n}<")),
            "{state} {n} in {}",
            a.body
        );
    }
    assert!(a.body.contains("id=\"count-total\">16<"));
    assert!(a.body.contains("id=\"expired\">1<"), "one expired lease");
    assert!(
        a.body.contains("id=\"oldest-lease\">expired "),
        "the oldest lease is the expired one"
    );
    // The dead record's error: markup escaped, the newline and ESC shown as escapes.
    assert!(a.body.contains("dead/1"));
    assert!(a
        .body
        .contains("boom &lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        !a.body.contains("<script>alert(1)"),
        "markup from the ledger never runs"
    );
    assert!(a
        .body
        .contains(r#"<span class="esc" title="U+000A">\n</span>"#));
    assert!(a
        .body
        .contains(r#"<span class="esc" title="U+001B">\u{1b}</span>"#));
    assert!(a.body.contains("read-only"));
    assert!(
        !a.body.contains("<form"),
        "no repair buttons when read-only"
    );
    // The inline script runs only under the nonce the policy names.
    let csp = a.header(header::CONTENT_SECURITY_POLICY).to_owned();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("a nonce in the CSP");
    assert!(nonce.len() >= 16);
    assert!(a.body.contains(&format!("<script nonce=\"{nonce}\">")));
    assert_eq!(a.header(header::X_FRAME_OPTIONS), "DENY");
    let again = get(&app, "/").await;
    assert!(
        !again
            .header(header::CONTENT_SECURITY_POLICY)
            .contains(nonce),
        "a new nonce per answer"
    );
}

/// `/api/stats` has exactly the fields of `qupid --json stats`, with the seeded values.
pub async fn api_stats_has_the_cli_shape<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let app = {
        let mut b = Dashboard::builder(fx.ledger.clone()).ledger_name("redis://:pw@host/0");
        if let Some(ns) = &fx.namespace {
            b = b.namespace(ns);
        }
        b.build().expect("a dashboard").router()
    };
    let a = get(&app, "/api/stats").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.header(header::CONTENT_TYPE), "application/json");
    let v = a.json();
    let mut fields: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "counts",
            "expired_leases",
            "ledger",
            "namespace",
            "now_ms",
            "oldest_lease_expires_at_ms",
            "total"
        ]
    );
    assert_eq!(
        v["counts"],
        json!({"queued": 3, "running": 2, "completed": 9, "dead": 2})
    );
    assert_eq!(v["total"], 16);
    assert_eq!(v["expired_leases"], 1);
    assert_eq!(v["ledger"], "redis://:***@host/0", "the password is hidden");
    assert_eq!(v["namespace"], json!(fx.namespace));
    let now = v["now_ms"].as_u64().expect("now_ms");
    let oldest = v["oldest_lease_expires_at_ms"].as_u64().expect("a lease");
    assert!(
        oldest < now,
        "the oldest lease is the expired one: {oldest} < {now}"
    );
    let expired = record(&*fx.ledger, "queued/expired").await.expect("record");
    assert_eq!(expired.expires_at.map(|t| t.as_millis()), Some(oldest));
}

/// A prefix search pages through exactly the keys that start with the prefix, in byte
/// order, in the asked state only, with cursors that pick up where the page ended.
pub async fn lists_page_through_a_prefix_by_cursor<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let app = app(&fx, false);
    let list = |q: String| {
        let app = app.clone();
        async move {
            let a = get(&app, &format!("/api/list?{q}")).await;
            assert_eq!(a.status, StatusCode::OK, "{q}: {}", a.body);
            let v = a.json();
            assert_eq!(v["state"], "completed");
            keys_and_next(&v)
        }
    };
    // Walk "orders/" two at a time: orders/5 is running, so not among them.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = format!("state=completed&prefix={}&limit=2", enc("orders/"));
        if let Some(a) = &after {
            q.push_str(&format!("&after={}", enc(a)));
        }
        let (keys, next) = list(q).await;
        assert!(keys.len() <= 2);
        pages += 1;
        seen.extend(keys.clone());
        match next {
            Some(n) => {
                assert_eq!(Some(&n), keys.last(), "the cursor is the page's last key");
                after = Some(n);
            }
            None => break,
        }
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(
        seen,
        ["orders/1", "orders/10", "orders/2", "orders/3", "orders/4"]
    );
    assert_eq!(pages, 3, "2 + 2 + 1, and the last page says so");
    // The prefix itself is a key of the run, first.
    let (keys, next) = list("state=completed&prefix=orders".to_owned()).await;
    assert_eq!(
        keys,
        [
            "orders",
            "orders/1",
            "orders/10",
            "orders/2",
            "orders/3",
            "orders/4",
            "orders0"
        ]
    );
    assert_eq!(next, None);
    // A cursor before the run starts at the run; one past it finds nothing.
    let (keys, _) = list(format!(
        "state=completed&prefix={}&after=a&limit=1",
        enc("orders/")
    ))
    .await;
    assert_eq!(keys, ["orders/1"]);
    let (keys, next) = list(format!("state=completed&prefix={}&after=p", enc("orders/"))).await;
    assert!(keys.is_empty() && next.is_none(), "{keys:?}");
    // A prefix nothing starts with, and one that only a key of another state starts with.
    let (keys, _) = list("state=completed&prefix=nothing".to_owned()).await;
    assert!(keys.is_empty());
    let (keys, _) = list(format!("state=completed&prefix={}", enc("orders/5"))).await;
    assert!(keys.is_empty(), "orders/5 is running: {keys:?}");
    // No prefix: the whole state, by cursor, as the ledger lists it.
    let (keys, next) = list("state=completed&limit=4".to_owned()).await;
    assert_eq!(keys, COMPLETED[..4]);
    let (rest, _) = list(format!(
        "state=completed&limit=100&after={}",
        enc(&next.expect("a next page"))
    ))
    .await;
    assert_eq!(rest, COMPLETED[4..]);
    // The odd key round-trips through the query string.
    let (keys, _) = list(format!("state=completed&prefix={}", enc("odd/<b>"))).await;
    assert_eq!(keys, [ODD_KEY]);
}

/// The HTML list shows the rows (keys escaped), the search box with the prefix, and a next
/// link that carries the cursor and the prefix.
pub async fn list_pages_are_html_with_search_and_paging<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let app = app(&fx, false);
    let a = get(
        &app,
        &format!("/list/completed?prefix={}&limit=2", enc("orders/")),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains(">orders/1</a>") && a.body.contains(">orders/10</a>"));
    assert!(!a.body.contains(">orders/2</a>"), "two per page");
    assert!(
        a.body.contains("value=\"orders/\""),
        "the search box keeps the prefix"
    );
    assert!(
        a.body.contains(
            "href=\"/list/completed?limit=2&amp;prefix=orders%2F&amp;after=orders%2F10\""
        ),
        "the next link: {}",
        a.body
    );
    let a = get(&app, "/list/completed?prefix=odd").await;
    assert!(
        a.body.contains(r#"odd/&lt;b&gt;&quot;x&quot;&amp;&#39;y&#39;<span class="esc" title="U+000A">\n</span>z"#),
        "{}",
        a.body
    );
    assert!(a
        .body
        .contains("href=\"/show?key=odd%2F%3Cb%3E%22x%22%26%27y%27%0Az\""));
    let a = get(&app, "/list/dead").await;
    assert!(
        a.body.contains("Dead <span class=\"muted\">(2)</span>"),
        "{}",
        a.body
    );
    assert!(a.body.contains("timed out"));
}

/// Bad list requests answer 400 with a reason; a huge limit is cut to the cap.
pub async fn bad_list_requests_are_refused_or_capped<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let app = Dashboard::builder(fx.ledger.clone())
        .page_limit(3)
        .build()
        .expect("a dashboard")
        .router();
    for (uri, why) in [
        ("/api/list", "expected a state"),
        ("/api/list?state=bogus", "expected a state"),
        ("/list/bogus", "expected a state"),
        ("/api/list?state=dead&after=", "must not be empty"),
        ("/list/dead?after=", "must not be empty"),
        ("/api/list?state=dead&after=%FF%FE", "UTF-8"),
        ("/api/list?state=dead&after=%G1", "percent-encoding"),
        ("/api/list?state=dead&limit=0", "at least 1"),
        ("/api/list?state=dead&limit=-1", "a number"),
        ("/list/dead?limit=abc", "a number"),
        ("/api/list?state=dead&prefix=%FF", "UTF-8"),
    ] {
        let a = get(&app, uri).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}: {}", a.body);
        assert!(a.body.contains(why), "{uri}: {why:?} in {}", a.body);
    }
    let long = "k".repeat(qupid::MAX_KEY_LEN + 1);
    let a = get(&app, &format!("/api/list?state=dead&after={long}")).await;
    assert_eq!(
        a.status,
        StatusCode::BAD_REQUEST,
        "a cursor too long to be a key"
    );
    let a = get(&app, &format!("/api/list?state=dead&prefix={long}")).await;
    assert_eq!(
        a.status,
        StatusCode::BAD_REQUEST,
        "a prefix too long to match"
    );
    for limit in ["4", "1000000", "99999999999999999999999999"] {
        let a = get(&app, &format!("/api/list?state=completed&limit={limit}")).await;
        assert_eq!(a.status, StatusCode::OK, "{limit}: {}", a.body);
        let (keys, next) = keys_and_next(&a.json());
        assert_eq!(keys.len(), 3, "limit {limit} is cut to the cap");
        assert!(next.is_some());
    }
    // A cursor that is a key no record has is still a place in key order.
    let a = get(&app, "/api/list?state=completed&after=orders%2F3").await;
    assert_eq!(
        keys_and_next(&a.json()),
        (vec!["orders/4".to_owned(), "orders0".to_owned()], None)
    );
}

/// The record page shows every field, the odd key escaped; the JSON has the CLI's shape;
/// malformed keys answer 400 and unknown ones 404.
pub async fn records_show_everything_and_bad_keys_are_refused<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let app = app(&fx, false);
    let dead = record(&*fx.ledger, "dead/1").await.expect("dead/1");
    let a = get(&app, "/show?key=dead%2F1").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    for want in [
        "<h1 class=\"key\">dead/1</h1>",
        "<span class=\"state dead\">dead</span>",
        "<dt>version</dt><dd>v1</dd>",
        "<dt>attempts</dt><dd>1</dd>",
        &format!("<dt>token</dt><dd>{}</dd>", dead.token.get()),
        "boom &lt;script&gt;",
    ] {
        assert!(a.body.contains(want), "{want:?} in {}", a.body);
    }
    let a = get(&app, "/show?key=run%2F1").await;
    assert!(
        a.body.contains("<dt>lease expires</dt><dd><time"),
        "{}",
        a.body
    );
    let a = get(&app, "/show?key=queued%2Fexpired").await;
    assert!(a
        .body
        .contains("(expired: the next offer takes the key over)"));
    let a = get(&app, &format!("/show?key={}", enc(ODD_KEY))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a
        .body
        .contains(r#"<span class="esc" title="U+000A">\n</span>z</h1>"#));
    // The JSON, field for field as `qupid --json show`.
    let a = get(&app, "/api/show?key=dead%2F1").await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(
        v,
        json!({
            "key": "dead/1", "state": "dead", "version": "v1", "newer_version": null,
            "attempts": 1, "abandoned": 0, "token": dead.token.get(), "expires_at_ms": null,
            "finished_at_ms": dead.finished_at.map(|t| t.as_millis()),
            "last_error": DEAD_ERROR, "superseded": false
        })
    );
    let long = "k".repeat(qupid::MAX_KEY_LEN + 1);
    for (uri, status) in [
        ("/show?key=nope".to_owned(), StatusCode::NOT_FOUND),
        ("/api/show?key=nope".to_owned(), StatusCode::NOT_FOUND),
        ("/show".to_owned(), StatusCode::BAD_REQUEST),
        ("/show?key=".to_owned(), StatusCode::BAD_REQUEST),
        ("/api/show?key=".to_owned(), StatusCode::BAD_REQUEST),
        ("/show?key=%FF".to_owned(), StatusCode::BAD_REQUEST),
        ("/api/show?key=%E2%82".to_owned(), StatusCode::BAD_REQUEST),
        ("/show?key=%".to_owned(), StatusCode::BAD_REQUEST),
        (format!("/show?key={long}"), StatusCode::BAD_REQUEST),
        (format!("/api/show?key={long}"), StatusCode::BAD_REQUEST),
    ] {
        let a = get(&app, &uri).await;
        assert_eq!(
            a.status,
            status,
            "{}: {}",
            &uri[..uri.len().min(40)],
            a.body
        );
        if uri.starts_with("/api/") {
            assert!(a.json()["error"].is_string(), "JSON errors: {}", a.body);
        }
    }
    let a = get(&app, "/api/show?key=nope").await;
    assert!(a.json()["error"]
        .as_str()
        .unwrap_or_default()
        .contains("no record"));
}

/// A read-only dashboard refuses every write, even with the right CSRF token, and changes
/// nothing.
pub async fn writes_are_forbidden_when_read_only<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let app = app(&fx, false);
    let csrf = csrf(&app).await;
    for (uri, form) in [
        ("/retry", format!("key=dead%2F1&confirm=1&csrf={csrf}")),
        ("/remove", format!("key=dead%2F1&confirm=1&csrf={csrf}")),
        (
            "/remove",
            format!("key=run%2F1&force=1&confirm=2&csrf={csrf}"),
        ),
        (
            "/purge",
            format!("completed=1&dead=1&older_than=0s&confirm=1&csrf={csrf}"),
        ),
    ] {
        let a = post_form(&app, uri, &form).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{uri}: {}", a.body);
        assert!(a.body.contains("read-only"), "{}", a.body);
    }
    for (uri, body) in [
        ("/api/retry", json!({"keys": ["dead/1"]})),
        ("/api/remove", json!({"keys": ["dead/1"], "force": true})),
        (
            "/api/purge",
            json!({"completed": true, "older_than_secs": 0}),
        ),
    ] {
        let a = post_json(&app, uri, &body, &[("x-qupid-csrf", &csrf)]).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{uri}: {}", a.body);
        assert!(a.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("read-only"));
    }
    let s = fx.ledger.stats().await.expect("stats");
    assert_eq!(
        (s.completed, s.dead, s.running),
        (9, 2, 2),
        "nothing changed"
    );
    assert!(!get(&app, "/show?key=dead%2F1")
        .await
        .body
        .contains("retry…"));
}

/// With writes allowed, a POST without the CSRF token, or with a wrong one, is 403 and
/// changes nothing.
pub async fn writes_need_the_csrf_token<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let app = app(&fx, true);
    let wrong = "0".repeat(32);
    for form in [
        "key=dead%2F1&confirm=1".to_owned(),
        format!("key=dead%2F1&confirm=1&csrf={wrong}"),
        "key=dead%2F1&confirm=1&csrf=".to_owned(),
    ] {
        for uri in ["/retry", "/remove"] {
            let a = post_form(&app, uri, &form).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{uri} {form}: {}", a.body);
            assert!(a.body.contains("CSRF"), "{}", a.body);
        }
    }
    let a = post_form(&app, "/purge", "completed=1&older_than=0s&confirm=1").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = post_json(&app, "/api/retry", &json!({"keys": ["dead/1"]}), &[]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = post_json(
        &app,
        "/api/retry",
        &json!({"keys": ["dead/1"]}),
        &[("x-qupid-csrf", &wrong)],
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let s = fx.ledger.stats().await.expect("stats");
    assert_eq!((s.completed, s.dead), (9, 2), "nothing changed");
    // A malformed form body is a bad request, not a write.
    let csrf = csrf(&app).await;
    let a = post_form(&app, "/retry", &format!("key=%FF&confirm=1&csrf={csrf}")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = post_form(&app, "/retry", &format!("confirm=1&csrf={csrf}")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "no key");
}

/// Retry answers a confirmation page first; only the confirmed POST retries. A key that is
/// not dead is refused (409); "retry all" retries every dead record.
pub async fn retry_asks_first_then_retries<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let app = app(&fx, true);
    let csrf = csrf(&app).await;
    let page = get(&app, "/show?key=dead%2F1").await;
    assert!(
        page.body.contains("retry…"),
        "a retry button on a dead record"
    );
    assert!(page
        .body
        .contains(&format!("name=\"csrf\" value=\"{csrf}\"")));
    let a = post_form(&app, "/retry", &format!("key=dead%2F1&csrf={csrf}")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains("Retry this dead record?"), "{}", a.body);
    assert!(a.body.contains("name=\"confirm\" value=\"1\""));
    assert!(record(&*fx.ledger, "dead/1").await.is_some(), "not yet");
    let a = post_form(
        &app,
        "/retry",
        &format!("key=dead%2F1&confirm=1&csrf={csrf}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("Retried"));
    assert!(record(&*fx.ledger, "dead/1").await.is_none(), "retried");
    let a = post_form(
        &app,
        "/retry",
        &format!("key=orders%2F1&confirm=1&csrf={csrf}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert!(a.body.contains("completed, not dead"));
    let a = post_form(
        &app,
        "/retry",
        &format!("key=dead%2F1&confirm=1&csrf={csrf}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // Every dead record.
    let a = post_form(&app, "/retry", &format!("all=1&csrf={csrf}")).await;
    assert!(a.body.contains("Retry every dead record?") && a.body.contains("<strong>1</strong>"));
    let a = post_form(&app, "/retry", &format!("all=1&confirm=1&csrf={csrf}")).await;
    assert!(a.body.contains("Retried 1 dead records"), "{}", a.body);
    assert_eq!(fx.ledger.stats().await.expect("stats").dead, 0);
}

/// Removing a leased key is refused without force; forced, it asks twice, and only the
/// second confirmation removes it.
pub async fn a_forced_remove_asks_twice<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let app = app(&fx, true);
    let csrf = csrf(&app).await;
    let page = get(&app, "/show?key=run%2F1").await;
    assert!(page.body.contains("force remove…"));
    let a = post_form(
        &app,
        "/remove",
        &format!("key=run%2F1&confirm=1&csrf={csrf}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert!(a.body.contains("is running"));
    let still = |k: &'static str| {
        let l = fx.ledger.clone();
        async move { record(&*l, k).await.map(|r| r.state) }
    };
    assert_eq!(still("run/1").await, Some(State::Running));
    let a = post_form(&app, "/remove", &format!("key=run%2F1&force=1&csrf={csrf}")).await;
    assert!(
        a.body.contains("(1 of 2)") && a.body.contains("running under token"),
        "{}",
        a.body
    );
    assert_eq!(still("run/1").await, Some(State::Running));
    let a = post_form(
        &app,
        "/remove",
        &format!("key=run%2F1&force=1&confirm=1&csrf={csrf}"),
    )
    .await;
    assert!(a.body.contains("(2 of 2)"), "{}", a.body);
    assert!(a.body.contains("name=\"confirm\" value=\"2\""));
    assert_eq!(
        still("run/1").await,
        Some(State::Running),
        "one confirmation is not enough"
    );
    let a = post_form(
        &app,
        "/remove",
        &format!("key=run%2F1&force=1&confirm=2&csrf={csrf}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("Removed"));
    assert_eq!(still("run/1").await, None);
    // A finished record: one confirmation.
    let a = post_form(&app, "/remove", &format!("key=orders%2F1&csrf={csrf}")).await;
    assert!(a.body.contains("Remove this record?"));
    assert_eq!(still("orders/1").await, Some(State::Completed));
    let a = post_form(
        &app,
        "/remove",
        &format!("key=orders%2F1&confirm=1&csrf={csrf}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(still("orders/1").await, None);
}

/// The purge page previews (a dry run that changes nothing, read-only or not); the
/// confirmed POST purges what the preview counted.
pub async fn purge_previews_then_purges<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let ro = app(&fx, false);
    let a = get(&ro, "/purge?completed=1&dead=1&older_than=0s").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(
        a.body.contains("id=\"would-completed\">9<") && a.body.contains("id=\"would-dead\">2<"),
        "{}",
        a.body
    );
    assert!(a.body.contains("This dashboard is read-only."));
    let a = get(&ro, "/purge?completed=1&older_than=1000d").await;
    assert!(a.body.contains("id=\"would-completed\">0<") && !a.body.contains("would-dead"));
    for bad in [
        "/purge?older_than=7d",
        "/purge?completed=1&older_than=7",
        "/purge?dead=1&older_than=-1d",
    ] {
        assert_eq!(get(&ro, bad).await.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let app = app(&fx, true);
    let csrf = csrf(&app).await;
    let a = post_form(
        &app,
        "/purge",
        &format!("completed=1&older_than=0s&csrf={csrf}"),
    )
    .await;
    assert!(
        a.body.contains("id=\"would-completed\">9<") && a.body.contains("purge now"),
        "{}",
        a.body
    );
    assert_eq!(
        fx.ledger.stats().await.expect("stats").completed,
        9,
        "a preview changes nothing"
    );
    let a = post_form(
        &app,
        "/purge",
        &format!("completed=1&older_than=1000d&confirm=1&csrf={csrf}"),
    )
    .await;
    assert!(a.body.contains("id=\"purged-completed\">0<"), "{}", a.body);
    let a = post_form(
        &app,
        "/purge",
        &format!("completed=1&older_than=0s&confirm=1&csrf={csrf}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains("id=\"purged-completed\">9<"), "{}", a.body);
    let s = fx.ledger.stats().await.expect("stats");
    assert_eq!(
        (s.completed, s.dead, s.queued),
        (0, 2, 3),
        "only completed records purged"
    );
}

/// The JSON repairs answer in the CLI's shapes, take the CSRF header or the bearer token,
/// and refuse bad bodies.
pub async fn the_json_repairs_answer_in_the_cli_shapes<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let app = app(&fx, true);
    let csrf = csrf(&app).await;
    let h = [("x-qupid-csrf", csrf.as_str())];
    let a = post_json(
        &app,
        "/api/remove",
        &json!({"keys": ["orders/1", "run/1", "nope", "orders/1"]}),
        &h,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.json(),
        json!({"force": false, "removed": 1, "results": [
            {"key": "orders/1", "outcome": "removed"},
            {"key": "run/1", "outcome": "refused", "state": "running"},
            {"key": "nope", "outcome": "not_found"}]})
    );
    let a = post_json(
        &app,
        "/api/retry",
        &json!({"keys": ["dead/1", "orders/2"]}),
        &h,
    )
    .await;
    assert_eq!(
        a.json(),
        json!({"all_dead": false, "retried": 1, "results": [
            {"key": "dead/1", "outcome": "retried"},
            {"key": "orders/2", "outcome": "not_dead", "state": "completed"}]})
    );
    let a = post_json(
        &app,
        "/api/purge",
        &json!({"completed": true, "older_than_secs": 0, "dry_run": true}),
        &h,
    )
    .await;
    let v = a.json();
    assert_eq!(
        (
            v["dry_run"].clone(),
            v["completed"].clone(),
            v["dead"].clone()
        ),
        (json!(true), json!(8), json!(null))
    );
    assert_eq!(
        fx.ledger.stats().await.expect("stats").completed,
        8,
        "a dry run changes nothing"
    );
    let a = post_json(&app, "/api/retry", &json!({"all_dead": true}), &h).await;
    assert_eq!(
        a.json(),
        json!({"all_dead": true, "retried": 1, "results": []})
    );
    for (uri, body, why) in [
        ("/api/remove", json!({"keys": []}), "at least one key"),
        ("/api/remove", json!({"keys": [""]}), "not a key"),
        (
            "/api/remove",
            json!({"keys": ["a"], "forse": true}),
            "unknown field",
        ),
        ("/api/remove", json!({"keys": "a"}), "bad JSON"),
        (
            "/api/remove",
            json!({"keys": vec!["k"; 1001]}),
            "at most 1000 keys",
        ),
        (
            "/api/retry",
            json!({"keys": ["a"], "all_dead": true}),
            "not both",
        ),
        (
            "/api/purge",
            json!({"older_than_secs": 0}),
            "choose what to purge",
        ),
        ("/api/purge", json!({"completed": true}), "older_than_secs"),
    ] {
        let a = post_json(&app, uri, &body, &h).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{uri} {body}: {}",
            a.body
        );
        assert!(
            a.json()["error"].as_str().unwrap_or_default().contains(why),
            "{why:?}: {}",
            a.body
        );
    }
    let req = Request::post("/api/remove")
        .header("x-qupid-csrf", csrf.as_str())
        .body(Body::from("{"))
        .expect("request");
    assert_eq!(send(&app, req).await.status, StatusCode::BAD_REQUEST);
    // With a token, the bearer header stands for the CSRF token.
    let app = Dashboard::builder(fx.ledger.clone())
        .allow_writes(true)
        .token("t0ken")
        .build()
        .expect("a dashboard")
        .router();
    let a = post_json(
        &app,
        "/api/remove",
        &json!({"keys": ["orders/2"]}),
        &[("authorization", "Bearer t0ken")],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["removed"], 1);
}

/// With a token, every route answers 401 without it or with a wrong one; the bearer
/// header, `?token=` once (a cookie, then a redirect without the token) and the login form
/// let a client in.
pub async fn a_token_is_checked_on_every_request<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let dashboard = Dashboard::builder(fx.ledger.clone())
        .allow_writes(true)
        .token("s3cret")
        .build()
        .expect("a dashboard");
    let app = dashboard.router();
    let with = |uri: &str, name: &str, value: &str| {
        Request::get(uri)
            .header(name, value)
            .body(Body::empty())
            .expect("request")
    };
    for uri in [
        "/",
        "/list/dead",
        "/show?key=dead%2F1",
        "/purge",
        "/api/stats",
        "/api/list?state=dead",
        "/api/session",
        "/metrics",
        "/healthz",
        "/nope",
    ] {
        let a = get(&app, uri).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}: {}", a.body);
        assert_eq!(a.header(header::WWW_AUTHENTICATE), "Bearer realm=\"qupid\"");
        assert!(!a.body.contains("dead/1"), "{uri} leaks nothing");
        for bad in [
            "Bearer wrong",
            "Bearer ",
            "Basic czNjcmV0",
            "Bearer s3cret2",
        ] {
            let a = send(&app, with(uri, "authorization", bad)).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri} with {bad}");
        }
        let a = send(&app, with(uri, "authorization", "Bearer s3cret")).await;
        assert_ne!(a.status, StatusCode::UNAUTHORIZED, "{uri} with the token");
        let a = send(&app, with(uri, "cookie", "qupid_session=s3cret")).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "{uri}: the token is not the session"
        );
    }
    assert!(
        get(&app, "/").await.body.contains("name=\"token\""),
        "a page asks to log in"
    );
    assert!(get(&app, "/api/stats").await.json()["error"].is_string());
    // POSTs too, before any CSRF check.
    let a = post_form(&app, "/retry", "key=dead%2F1&confirm=1").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // ?token= once: a cookie, and the same page without the token.
    let a = get(&app, "/list/dead?token=wrong").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = get(&app, "/list/dead?limit=5&token=s3cret").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.header(header::LOCATION), "/list/dead?limit=5");
    let a2 = get(&app, "//evil.example/x?token=s3cret").await;
    assert_eq!(
        a2.header(header::LOCATION),
        "/evil.example/x",
        "never to another site"
    );
    let cookie = a.header(header::SET_COOKIE).to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("s3cret"),
        "the cookie is a session, not the token: {cookie}"
    );
    let session = cookie.split(';').next().expect("name=value").to_owned();
    let a = send(&app, with("/list/dead", "cookie", &session)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("dead/1"));
    let a = send(
        &app,
        with("/metrics", "cookie", &format!("other=1; {session}")),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    // The login form.
    let a = post_form(&app, "/login", "token=nope").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body.contains("wrong token"));
    let a = post_form(&app, "/login", "token=s3cret").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.header(header::LOCATION), "/");
    assert_eq!(
        a.header(header::SET_COOKIE).split(';').next(),
        Some(session.as_str())
    );
    // Logging the dashboard shows none of its secrets.
    let csrf = send(&app, with("/api/session", "authorization", "Bearer s3cret"))
        .await
        .json()["csrf"]
        .as_str()
        .expect("csrf")
        .to_owned();
    let shown = format!("{dashboard:?}");
    let session = session.trim_start_matches("qupid_session=");
    for secret in ["s3cret", csrf.as_str(), session] {
        assert!(!shown.contains(secret), "{secret:?} in {shown}");
    }
    // A token that cannot travel in a header is refused when the dashboard is built.
    for bad in ["", "has space", "naïve", &"x".repeat(257)] {
        let e = Dashboard::builder(fx.ledger.clone())
            .token(bad)
            .build()
            .expect_err(bad);
        assert!(e.to_string().contains("visible ASCII"), "{e}");
    }
}

/// `/metrics` is Prometheus text with a gauge per state and the expired leases;
/// `/healthz` answers `ok`.
pub async fn metrics_and_health<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let app = app(&fx, false);
    let a = get(&app, "/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a
        .header(header::CONTENT_TYPE)
        .starts_with("text/plain; version=0.0.4"));
    let queue = fx
        .namespace
        .as_ref()
        .map(|ns| format!("queue=\"{ns}\","))
        .unwrap_or_default();
    for (state, n) in [("queued", 3), ("running", 2), ("completed", 9), ("dead", 2)] {
        let line = format!("qupid_ledger_records{{{queue}state=\"{state}\"}} {n}\n");
        assert!(a.body.contains(&line), "{line:?} in {}", a.body);
    }
    let labels = fx
        .namespace
        .as_ref()
        .map(|ns| format!("{{queue=\"{ns}\"}}"))
        .unwrap_or_default();
    assert!(
        a.body
            .contains(&format!("qupid_ledger_expired_leases{labels} 1\n")),
        "{}",
        a.body
    );
    assert!(a.body.contains("# TYPE qupid_ledger_records gauge\n"));
    // Every sample line is `name{labels} value` or `name value`.
    for line in a.body.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').expect("a value");
        assert!(value.parse::<u64>().is_ok(), "{line}");
    }
    let a = get(&app, "/healthz").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ok\n"));
}

/// Nested under a path, the pages link under it and the API answers there.
pub async fn mounted_under_a_path_links_follow<L: LedgerAdmin>(fx: Fx<L>) {
    seed(&*fx.ledger).await;
    let outer = axum::Router::new()
        .route("/", axum::routing::get(|| async { "the app" }))
        .nest("/ops/qupid", app(&fx, true));
    assert_eq!(get(&outer, "/").await.body, "the app");
    {
        let a = get(&outer, "/ops/qupid").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(
            a.body.contains("href=\"/ops/qupid\""),
            "the overview's own link: {}",
            a.body
        );
        assert!(
            a.body.contains("href=\"/ops/qupid/list/dead\""),
            "{}",
            a.body
        );
        assert!(a.body.contains("data-base=\"/ops/qupid\""));
        assert!(a.body.contains("href=\"/ops/qupid/show?key=dead%2F1\""));
        assert!(a.body.contains("action=\"/ops/qupid/retry\""));
    }
    let a = get(&outer, "/ops/qupid/api/stats").await;
    assert_eq!(a.json()["total"], 16);
    let a = get(&outer, "/ops/qupid/list/dead?limit=1").await;
    assert!(
        a.body
            .contains("href=\"/ops/qupid/list/dead?limit=1&amp;after=dead%2F1\""),
        "{}",
        a.body
    );
}

/// The background task samples the counts; `/api/throughput` answers the samples and the
/// completions per second between them.
pub async fn throughput_is_sampled_in_the_background<L: LedgerAdmin>(fx: Fx<L>) {
    let app = Dashboard::builder(fx.ledger.clone())
        .sample_every(Duration::from_millis(100))
        .history(50)
        .build()
        .expect("a dashboard")
        .router();
    let a = get(&app, "/api/throughput").await;
    assert_eq!(a.json()["interval_ms"], 100);
    // Complete keys while the sampler watches.
    let mut p = Policy::default();
    p.max_attempts = 1;
    for i in 0..8 {
        let offers: Vec<qupid::Offer> = (0..10)
            .map(|j| qupid::Offer::new(key(&format!("t/{i}/{j}"))))
            .collect();
        let out = fx.ledger.offer_and_start(&p, &offers).await.expect("offer");
        let claims: Vec<qupid::ledger::Claim> = out
            .iter()
            .zip(&offers)
            .map(|(o, offer)| qupid::ledger::Claim {
                key: offer.key.clone(),
                token: o.lease().expect("accepted").token,
            })
            .collect();
        fx.ledger.complete(&claims).await.expect("complete");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let v = get(&app, "/api/throughput").await.json();
    let samples = v["samples"].as_array().expect("samples");
    assert!(samples.len() >= 4, "{v}");
    let last = samples.last().expect("a sample");
    assert_eq!(last["completed"], 80);
    let first = samples.first().expect("a sample");
    assert!(
        first["completed"].as_u64() < Some(80),
        "sampling began before the work ended: {v}"
    );
    let rates = v["rates"].as_array().expect("rates");
    assert_eq!(rates.len(), samples.len() - 1);
    assert!(
        rates
            .iter()
            .any(|r| r["completed_per_sec"].as_f64() > Some(0.0)),
        "some completions per second: {v}"
    );
    assert!(rates.iter().all(|r| r["dead_per_sec"] == 0.0));
}

/// Unknown paths are 404; a dashboard that answers only to local hosts refuses others.
pub async fn unknown_paths_and_foreign_hosts_are_refused<L: LedgerAdmin>(fx: Fx<L>) {
    let app = app(&fx, false);
    for uri in ["/nope", "/api/nope", "/list", "/list/dead/more"] {
        assert_eq!(get(&app, uri).await.status, StatusCode::NOT_FOUND, "{uri}");
    }
    let app = Dashboard::builder(fx.ledger.clone())
        .local_only(true)
        .build()
        .expect("a dashboard")
        .router();
    let host = |h: &str| {
        Request::get("/api/stats")
            .header("host", h)
            .body(Body::empty())
            .expect("request")
    };
    assert_eq!(
        send(&app, host("127.0.0.1:7070")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, host("localhost:7070")).await.status,
        StatusCode::OK
    );
    let a = send(&app, host("rebound.example:7070")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("answers only to localhost"));
    assert_eq!(
        get(&app, "/api/stats").await.status,
        StatusCode::FORBIDDEN,
        "no Host at all"
    );
}
