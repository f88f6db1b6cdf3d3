//! A real browser loads the overview of a seeded ledger: headless Chromium runs the page's
//! live script (which polls the JSON API and draws the throughput chart), and the test reads
//! the DOM it leaves and saves a screenshot.
//!
//! Needs Chromium (`apt-get install chromium`; `scripts/test` installs it when missing), at
//! `/usr/bin/chromium` or where `QUPID_CHROMIUM` says. A missing browser fails the test with
//! that message; it never skips it. The screenshot goes to the test's temporary directory,
//! and also to `QUPID_SCREENSHOT` if set (`docs/dashboard.png` is made so).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use qupid::ledger::{Claim, Failure, Offered};
use qupid::{Key, Ledger, LedgerAdmin, Offer, Policy, SqliteLedger, Version};
use qupid_web::Dashboard;

const HOW_TO_INSTALL: &str = "the browser test needs Chromium: `apt-get install chromium` \
     (scripts/test installs it when missing), or point QUPID_CHROMIUM at a Chromium binary";

fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("QUPID_CHROMIUM") {
        return PathBuf::from(p);
    }
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("no Chromium at /usr/bin/chromium\n{HOW_TO_INSTALL}");
}

/// Runs headless Chromium on `url` with `args`, giving the page's scripts `budget_ms` of
/// (virtual) time; answers its stdout.
async fn run_chromium(url: &str, profile: &Path, args: &[&str], budget_ms: u32) -> String {
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        "--window-size=1280,1000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--virtual-time-budget={budget_ms}"))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run Chromium: {e}\n{HOW_TO_INSTALL}"));
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("Chromium finishes within 90 s")
        .expect("Chromium runs");
    assert!(
        out.status.success(),
        "Chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn key(s: &str) -> Key {
    Key::new(s).expect("a valid key")
}

/// Offers, starts and ends `keys`: completed, or failed for good with `error`.
async fn finish<L: LedgerAdmin>(l: &L, keys: &[String], error: Option<&str>) {
    let mut p = Policy::default();
    p.max_attempts = 1;
    let offers: Vec<Offer> = keys
        .iter()
        .map(|k| Offer::new(key(k)).with_version(Version::new("v3").expect("a version")))
        .collect();
    let claims: Vec<Claim> = l
        .offer_and_start(&p, &offers)
        .await
        .expect("offer")
        .iter()
        .zip(&offers)
        .map(|(o, offer)| match o {
            Offered::Accepted(lease) => Claim {
                key: offer.key.clone(),
                token: lease.token,
            },
            other => panic!("{:?}: {other:?}", offer.key),
        })
        .collect();
    match error {
        None => {
            l.complete(&claims).await.expect("complete");
        }
        Some(e) => {
            let failures: Vec<Failure> = claims
                .into_iter()
                .map(|claim| Failure {
                    claim,
                    error: e.to_owned(),
                })
                .collect();
            l.fail(&p, &failures).await.expect("fail");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_live_overview() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ledger = Arc::new(
        SqliteLedger::open(dir.path().join("orders.db"))
            .await
            .expect("open a sqlite ledger"),
    );
    // Seed: dead records with errors, one lease left to expire, work in flight.
    let l = &*ledger;
    finish(
        l,
        &["invoices/2026-11/0042".to_owned()],
        Some("PDF renderer exited with status 137 (out of memory)"),
    )
    .await;
    finish(
        l,
        &["invoices/2026-11/0107".to_owned()],
        Some("upload to s3://acme-invoices failed: 503 Slow Down\n(retried 5 times)"),
    )
    .await;
    finish(
        l,
        &["invoices/2026-11/0311".to_owned()],
        Some("customer 8812 not found"),
    )
    .await;
    let mut short = Policy::default();
    short.lease = Duration::from_millis(20);
    l.offer(&short, &[Offer::new(key("invoices/2026-11/0999"))])
        .await
        .expect("offer");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let p = Policy::default();
    let queued: Vec<Offer> = (0..37)
        .map(|i| Offer::new(key(&format!("invoices/2026-12/{i:04}"))))
        .collect();
    l.offer(&p, &queued).await.expect("offer");
    let running: Vec<Offer> = (100..108)
        .map(|i| Offer::new(key(&format!("invoices/2026-12/{i:04}"))))
        .collect();
    l.offer_and_start(&p, &running)
        .await
        .expect("offer and start");

    let dashboard = Dashboard::builder(ledger.clone())
        .ledger_name("sqlite://orders.db")
        .sample_every(Duration::from_millis(200))
        .refresh_every(Duration::from_millis(400))
        .build()
        .expect("a dashboard");
    dashboard.start_sampling();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let addr = listener.local_addr().expect("an address");
    let server = tokio::spawn(async move {
        axum::serve(listener, dashboard.router())
            .await
            .expect("serve");
    });

    // Work that the chart shows: completions at a rate that rises and falls.
    let mut n = 0;
    for round in 0u32..16 {
        let batch = 20 + 15 * (8 - round.abs_diff(8)) as usize;
        let keys: Vec<String> = (n..n + batch)
            .map(|i| format!("invoices/2026-11/{:04}", 1000 + i))
            .collect();
        n += batch;
        finish(l, &keys, None).await;
        if round % 5 == 4 {
            finish(
                l,
                &[format!("invoices/2026-11/x{round}")],
                Some("timeout after 30s"),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    let stats = ledger.stats().await.expect("stats");
    assert_eq!(
        (stats.queued, stats.running, stats.dead, stats.expired),
        (38, 8, 6, 1)
    );
    let completed = stats.completed;

    let url = format!("http://127.0.0.1:{}/", addr.port());
    let profile = tempfile::tempdir().expect("a profile directory");
    let dom = run_chromium(&url, profile.path(), &["--dump-dom"], 3_000).await;
    // The script ran: it fetched the JSON API, marked itself live and drew the chart.
    assert!(
        dom.contains("id=\"live\" data-state=\"ok\""),
        "the live script ran: {dom}"
    );
    let points: usize = dom
        .split("data-points=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a chart with points: {dom}"));
    assert!(points >= 5, "{points} rates drawn");
    assert!(dom.contains("<polyline") && dom.contains("class=\"line-completed\""));
    // The counts, as the page shows them after the script's refresh.
    for (state, n) in [
        ("queued", 38),
        ("running", 8),
        ("completed", completed),
        ("dead", 6),
    ] {
        assert!(
            dom.contains(&format!("id=\"count-{state}\">{n}<")),
            "{state} = {n} in {dom}"
        );
    }
    assert!(dom.contains("id=\"expired\">1<"));
    assert!(
        dom.contains("upload to s3://acme-invoices failed"),
        "recent dead errors"
    );
    let rate: f64 = dom
        .split("id=\"rate-completed\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a completion rate: {dom}"));
    assert!(rate >= 0.0);

    // A screenshot, for the eye and for the README, with work going on as it is taken.
    let busy = {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            for round in 0.. {
                let keys: Vec<String> = (0..40)
                    .map(|i| format!("invoices/2026-12/b{round:03}{i:02}"))
                    .collect();
                finish(&*ledger, &keys, None).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let shot_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let shot = shot_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &url,
        profile.path(),
        &[&format!("--screenshot={}", shot.display())],
        3_000,
    )
    .await;
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a PNG of {} bytes",
        png.len()
    );
    if let Ok(to) = std::env::var("QUPID_SCREENSHOT") {
        std::fs::write(&to, &png).expect("write the screenshot");
        eprintln!("saved the screenshot to {to}");
    }
    busy.abort();
    server.abort();
}
