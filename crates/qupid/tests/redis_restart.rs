//! A Redis server restarted in the middle of a run: the pipeline waits, backs off, resumes,
//! and loses nothing.
#![cfg(feature = "redis")]

mod redis_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qupid::{Entry, LedgerAdmin, Pipeline, Policy, RedisLedger, Source};
use redis_support::SpareServer;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_pauses_the_pipeline_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_owned();
    // Persistence on, so the restarted server still knows what was completed.
    let durable = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        dir_arg.as_str(),
    ];
    let mut server = SpareServer::start(&durable);
    let port = server.port();
    let ledger = RedisLedger::open(&server.url(), "restart").await.unwrap();

    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let entries: Vec<_> = (0..3000)
        .map(|i| Entry::new(format!("k{i:04}"), i).unwrap())
        .collect();
    // A source polled again and again, as records are until they are saved: an offer the
    // server applied but could not answer (killed mid-reply) leaves keys leased by nobody,
    // and the polls after their short leases expire bring them back.
    let mut policy = Policy::default();
    policy.lease = Duration::from_secs(3);
    let stop = CancellationToken::new();
    let pipeline = Pipeline::builder(ledger.clone())
        .source(Source::poll(Duration::from_millis(50), move || {
            let entries = entries.clone();
            async move { Ok::<_, std::io::Error>(entries) }
        }))
        .process({
            let seen = seen.clone();
            move |a| {
                *seen.lock().unwrap().entry(a.key().to_string()).or_default() += 1;
                async {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Ok::<_, std::io::Error>(())
                }
            }
        })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .concurrency(16)
        .buffer(64)
        .policy(policy)
        .shutdown(stop.clone())
        .build()
        .unwrap();
    let progress = pipeline.progress();
    let run = tokio::spawn(pipeline.run());
    while progress.snapshot().completed < 500 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill();
    let during = progress.snapshot().completed;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paused = progress.snapshot().completed;
    server = SpareServer::start_on(port, &durable);
    // Stop once the ledger holds every key Completed.
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(s) = ledger.stats().await {
                if s.completed == 3000 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    stop.cancel();
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("stopped")
        .unwrap()
        .unwrap();
    assert!(
        done.is_ok(),
        "every key completed after the restart: {report}"
    );

    assert!(
        paused - during < 100,
        "little completes while the server is down ({during} → {paused})"
    );
    assert!(report.ledger_errors > 0, "the outage is counted: {report}");
    assert_eq!(
        report.completed, 3000,
        "every completion counted once, an applied one whose answer was lost too: {report}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3000, "every entry was processed");
    let twice = seen.values().filter(|&&n| n > 1).count();
    assert!(
        twice <= 16,
        "at most the attempts in flight at the restart ran twice: {twice}"
    );
    let stats = ledger.stats().await.unwrap();
    assert_eq!((stats.completed, stats.queued, stats.running), (3000, 0, 0));
    drop(server);
}
