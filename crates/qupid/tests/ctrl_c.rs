//! Ctrl-C stops a pipeline gracefully (its own test binary: it signals its own process).

use qupid::LedgerAdmin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use qupid::{Entry, MemoryLedger, Pipeline, Source};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_gracefully_and_releases_what_is_left() {
    let ledger = MemoryLedger::new();
    let started = Arc::new(AtomicU32::new(0));
    let s = started.clone();
    let entries: Vec<_> = (0..500)
        .map(|i| Entry::new(format!("k{i}"), i).unwrap())
        .collect();
    let run = tokio::spawn(
        Pipeline::builder(ledger.clone())
            .source(Source::stream(
                futures::stream::iter(entries).chain(futures::stream::pending()),
            ))
            .process(move |_| {
                s.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, std::io::Error>(())
                }
            })
            .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
            .concurrency(4)
            .stop_on_ctrl_c()
            .build()
            .unwrap()
            .run(),
    );
    while started.load(Ordering::SeqCst) < 8 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Give the signal listener time to register before signalling.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -INT {}", std::process::id())])
        .status()
        .unwrap();
    assert!(status.success());
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stopped")
        .unwrap()
        .unwrap();
    assert!(report.completed > 0 && report.completed < 500, "{report}");
    assert!(report.released > 0, "{report}");
    let stats = ledger.stats().await.unwrap();
    assert_eq!((stats.queued, stats.running), (0, 0), "nothing left leased");
    assert_eq!(stats.completed, report.completed);
}
