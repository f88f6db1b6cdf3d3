//! A ledger that fails for a while (a restart, a network cut): the pipeline waits, retries,
//! and loses nothing.

use qupid::LedgerAdmin;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qupid::{Entry, ErrorKind, MemoryLedger, Pipeline, Queue, Source};
use qupid_testkit::FaultyLedger;

/// Runs 3,000 entries through a pipeline whose ledger goes down for 400 ms after a few hundred
/// completions; answers how many times each key was processed, and the report.
async fn run_through_an_outage(
    ledger: FaultyLedger<MemoryLedger>,
) -> (HashMap<String, u32>, qupid::Report) {
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let entries: Vec<_> = (0..3000)
        .map(|i| Entry::new(format!("k{i:04}"), i).unwrap())
        .collect();
    let pipeline = Pipeline::builder(ledger.clone())
        .source(Source::stream(futures::stream::iter(entries)))
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
        .build()
        .unwrap();
    let progress = pipeline.progress();
    let switch = ledger.clone();
    let outage = tokio::spawn(async move {
        while progress.snapshot().completed < 300 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        switch.set_down(true);
        tokio::time::sleep(Duration::from_millis(400)).await;
        switch.set_down(false);
    });
    let report = pipeline.run().await.unwrap();
    outage.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    (seen, report)
}

async fn check(ledger: FaultyLedger<MemoryLedger>) {
    let (seen, report) = run_through_an_outage(ledger.clone()).await;
    assert!(ledger.failed() > 0, "the outage happened");
    assert!(report.ledger_errors > 0, "and was counted: {report}");
    assert_eq!(report.completed, 3000, "{report}");
    assert_eq!(seen.len(), 3000, "every entry was processed");
    assert!(
        seen.values().all(|&n| n == 1),
        "none twice: the leases outlived the outage"
    );
    let stats = ledger.inner().stats().await.unwrap();
    assert_eq!((stats.completed, stats.queued, stats.running), (3000, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_nothing_with_direct_calls() {
    check(FaultyLedger::grouping(MemoryLedger::new(), true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_nothing_with_batched_calls() {
    check(FaultyLedger::grouping(MemoryLedger::new(), false)).await;
}

#[tokio::test]
async fn a_failed_publish_gives_the_entries_back() {
    let ledger = FaultyLedger::new(MemoryLedger::new());
    let queue = Queue::builder(ledger.clone()).capacity(8).build().unwrap();
    ledger.fail_next(1);
    let err = queue
        .publish_batch(vec![
            Entry::new("a", 1).unwrap(),
            Entry::new("b", 2).unwrap(),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.error().is_transient());
    let back = err.into_entries();
    assert_eq!(
        back.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    // Nothing was taken from the buffer: all 8 places are free again.
    for i in 0..8 {
        queue
            .try_publish(Entry::new(format!("k{i}"), i).unwrap())
            .await
            .unwrap();
    }
    assert_eq!(queue.buffered(), 8);
}

/// Completions the ledger applied but could not answer are sent again, found Completed under
/// their own token, and counted as completions: the pipeline ends, with every key counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_applied_without_an_answer_still_count() {
    for grouping in [false, true] {
        let ledger = FaultyLedger::grouping(MemoryLedger::new(), grouping);
        ledger.lose_completion_answers(5);
        let entries: Vec<_> = (0..500)
            .map(|i| Entry::new(format!("k{i:03}"), i).unwrap())
            .collect();
        let pipeline = Pipeline::builder(ledger.clone())
            .source(Source::stream(futures::stream::iter(entries)))
            .process(|_| async { Ok::<_, std::io::Error>(()) })
            .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
            .concurrency(8)
            .build()
            .unwrap();
        let report = tokio::time::timeout(Duration::from_secs(30), pipeline.run())
            .await
            .expect("the pipeline ends: no completion stays held")
            .unwrap();
        assert_eq!(ledger.failed(), 5, "five answers were lost");
        assert_eq!(report.completed, 500, "grouping {grouping}: {report}");
        assert_eq!(report.lease_lost, 0, "grouping {grouping}: {report}");
        let stats = ledger.inner().stats().await.unwrap();
        assert_eq!((stats.completed, stats.running), (500, 0));
    }
}
