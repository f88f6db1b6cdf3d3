//! The pipeline: de-dup across polls, retries, dead keys, panics, timeouts, stop, retention.

use qupid::LedgerAdmin;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use qupid::ledger::{Claim, Ledger, State};
use qupid::{
    Backoff, Entry, ErrorKind, Keep, Key, MemoryLedger, Offer, Pipeline, Policy, Source, Version,
};
use tokio_util::sync::CancellationToken;

/// A datastore whose records stay "unprocessed" until saved, as in the seed's picture.
#[derive(Clone, Default)]
struct Store {
    pending: Arc<Mutex<BTreeMap<String, u32>>>,
    processed: Arc<Mutex<HashMap<String, u32>>>,
}

impl Store {
    fn with(n: u32) -> Self {
        let s = Store::default();
        s.pending
            .lock()
            .unwrap()
            .extend((0..n).map(|i| (format!("rec/{i:05}"), i)));
        s
    }

    fn source(&self, every: Duration) -> Source<u32> {
        let store = self.clone();
        Source::poll(every, move || {
            let store = store.clone();
            async move {
                let pending = store.pending.lock().unwrap().clone();
                Ok::<_, std::io::Error>(pending.into_iter().map(|(k, v)| Entry::new(k, v)))
            }
        })
    }

    fn save(&self, key: &Key) {
        self.pending.lock().unwrap().remove(key.as_str());
    }

    fn count(&self, key: &Key) {
        *self
            .processed
            .lock()
            .unwrap()
            .entry(key.as_str().to_owned())
            .or_default() += 1;
    }

    fn times_processed(&self) -> Vec<u32> {
        self.processed.lock().unwrap().values().copied().collect()
    }
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(5),
        ..Backoff::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_record_is_processed_once_however_often_it_is_polled() {
    let store = Store::with(500);
    let (s1, s2) = (store.clone(), store.clone());
    let report = Pipeline::builder(MemoryLedger::new())
        .source(store.source(Duration::from_millis(2)))
        .process(move |a| {
            s1.count(a.key());
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<_, std::io::Error>(a.payload() * 2)
            }
        })
        .save(move |a, out| {
            let s2 = s2.clone();
            async move {
                assert_eq!(out, a.payload() * 2);
                s2.save(a.key());
                Ok::<_, std::io::Error>(())
            }
        })
        .concurrency(8)
        .stop_when_idle()
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.completed, 500);
    assert_eq!(report.accepted, 500);
    assert!(
        report.duplicates > 0,
        "polling again while processing shows duplicates: {report}"
    );
    assert_eq!(report.polled, report.accepted + report.duplicates);
    let times = store.times_processed();
    assert_eq!(times.len(), 500);
    assert!(
        times.iter().all(|&n| n == 1),
        "every record processed exactly once"
    );
    assert!(store.pending.lock().unwrap().is_empty(), "everything saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_sources_merge_into_one_dedup() {
    let ledger = MemoryLedger::new();
    let seen = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let entries = |range: std::ops::Range<u32>| {
        futures::stream::iter(
            range
                .map(|i| Entry::new(format!("k{i}"), i).unwrap())
                .collect::<Vec<_>>(),
        )
    };
    let s = seen.clone();
    let report = Pipeline::builder(ledger.clone())
        .source(Source::stream(entries(0..300)))
        .source(Source::stream(entries(200..500)).named("second"))
        .process(move |a| {
            *s.lock().unwrap().entry(a.key().to_string()).or_default() += 1;
            async { Ok::<_, std::io::Error>(()) }
        })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.polled, 600);
    assert_eq!(report.completed, 500);
    assert_eq!(report.duplicates, 100);
    assert!(seen.lock().unwrap().values().all(|&n| n == 1));
    assert_eq!(ledger.stats().await.unwrap().completed, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_backoff_then_succeed() {
    let tries = Arc::new(AtomicU32::new(0));
    let t = tries.clone();
    let report = Pipeline::builder(MemoryLedger::new())
        .source(Source::stream(futures::stream::iter(vec![Entry::new(
            "flaky",
            (),
        )
        .unwrap()])))
        .process(move |a| {
            let n = t.fetch_add(1, Ordering::SeqCst) + 1;
            assert_eq!(a.number(), n, "attempt numbers count up");
            async move {
                if n < 3 {
                    Err("not yet")
                } else {
                    Ok(())
                }
            }
        })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .backoff(fast_backoff())
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    assert_eq!(
        (report.completed, report.failed_attempts, report.dead),
        (1, 2, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_goes_dead_and_the_rest_complete() {
    let ledger = MemoryLedger::new();
    let mut policy = Policy::default();
    policy.max_attempts = 3;
    let entries: Vec<_> = (0..20)
        .map(|i| Entry::new(format!("k{i}"), i).unwrap())
        .collect();
    let report = Pipeline::builder(ledger.clone())
        .source(Source::stream(futures::stream::iter(entries)))
        .process(|a| {
            let poison = *a.payload() == 13;
            async move {
                if poison {
                    Err(format!("cannot parse record {}", 13))
                } else {
                    Ok(())
                }
            }
        })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .policy(policy)
        .backoff(fast_backoff())
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(
        (report.completed, report.dead, report.failed_attempts),
        (19, 1, 3)
    );
    let rec = ledger
        .get(&Key::new("k13").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, State::Dead);
    assert_eq!(rec.attempts, 3);
    assert_eq!(
        rec.last_error.as_deref(),
        Some("process: cannot parse record 13")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_only_that_attempt() {
    let ledger = MemoryLedger::new();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let entries: Vec<_> = (0..10)
        .map(|i| Entry::new(format!("k{i}"), i).unwrap())
        .collect();
    let report = Pipeline::builder(ledger.clone())
        .source(Source::stream(futures::stream::iter(entries)))
        .process(move |a| {
            let first_try_of_k3 = *a.payload() == 3 && a.number() == 1;
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                if first_try_of_k3 {
                    panic!("boom in user code");
                }
                Ok::<_, std::io::Error>(())
            }
        })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .backoff(fast_backoff())
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((report.completed, report.failed_attempts), (10, 1));
    assert_eq!(calls.load(Ordering::SeqCst), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_attempt_times_out_and_a_failed_save_does_not_complete() {
    let ledger = MemoryLedger::new();
    let mut policy = Policy::default();
    policy.max_attempts = 2;
    let entries = vec![
        Entry::new("slow", 0).unwrap(),
        Entry::new("unsaved", 1).unwrap(),
    ];
    let report = Pipeline::builder(ledger.clone())
        .source(Source::stream(futures::stream::iter(entries)))
        .process(|a| {
            let slow = *a.payload() == 0;
            async move {
                if slow {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok::<_, std::io::Error>(())
            }
        })
        .save(|_, ()| async { Err::<(), _>(std::io::Error::other("bucket unavailable")) })
        .policy(policy)
        .timeout(Some(Duration::from_millis(50)))
        .backoff(fast_backoff())
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((report.completed, report.dead), (0, 2));
    let slow = ledger
        .get(&Key::new("slow").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(slow.last_error.as_deref(), Some("timed out after 50ms"));
    let unsaved = ledger
        .get(&Key::new("unsaved").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        unsaved.last_error.as_deref(),
        Some("save: bucket unavailable")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drains_running_work_releases_the_rest_and_loses_nothing() {
    let ledger = MemoryLedger::new();
    let store = Store::with(200);
    let stop = CancellationToken::new();
    let (s1, s2, stopper) = (store.clone(), store.clone(), stop.clone());
    let started = Arc::new(AtomicU32::new(0));
    let st = started.clone();
    let report = Pipeline::builder(ledger.clone())
        .source(store.source(Duration::from_millis(5)))
        .process(move |a| {
            s1.count(a.key());
            if st.fetch_add(1, Ordering::SeqCst) == 20 {
                stopper.cancel(); // stop in the middle of the run
            }
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::io::Error>(*a.payload())
            }
        })
        .save(move |a, _| {
            let s2 = s2.clone();
            async move {
                s2.save(a.key());
                Ok::<_, std::io::Error>(())
            }
        })
        .concurrency(4)
        .shutdown(stop)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let stats = ledger.stats().await.unwrap();
    assert_eq!(
        (stats.queued, stats.running),
        (0, 0),
        "nothing left leased after a stop"
    );
    assert_eq!(stats.completed, report.completed);
    assert!(report.completed >= 21 && report.completed < 200, "{report}");
    assert!(report.released > 0, "buffered keys were released: {report}");
    let left = store.pending.lock().unwrap().len() as u64;
    assert_eq!(
        left,
        200 - report.completed,
        "every unsaved record is still in the store"
    );

    // A second run on the same ledger picks up exactly what was left.
    let s3 = store.clone();
    let s4 = store.clone();
    let second = Pipeline::builder(ledger.clone())
        .source(store.source(Duration::from_millis(5)))
        .process(move |a| {
            s3.count(a.key());
            async move { Ok::<_, std::io::Error>(()) }
        })
        .save(move |a, ()| {
            let s4 = s4.clone();
            async move {
                s4.save(a.key());
                Ok::<_, std::io::Error>(())
            }
        })
        .stop_when_idle()
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(second.completed, left);
    assert!(
        store.times_processed().iter().all(|&n| n == 1),
        "no record processed twice"
    );
    assert_eq!(ledger.stats().await.unwrap().completed, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_drain_timeout_running_attempts_are_cancelled_and_released() {
    let ledger = MemoryLedger::new();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let entries = vec![Entry::new("stuck", ()).unwrap()];
    let report = Pipeline::builder(ledger.clone())
        .source(Source::stream(
            futures::stream::iter(entries).chain(futures::stream::pending()),
        ))
        .process(move |_| {
            s.cancel();
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, std::io::Error>(())
            }
        })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .shutdown(stop)
        .drain_timeout(Duration::from_millis(50))
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((report.completed, report.released), (0, 1));
    assert_eq!(
        ledger.get(&Key::new("stuck").unwrap()).await.unwrap(),
        None,
        "released: absent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lost_mid_attempt_abandons_it() {
    let ledger = MemoryLedger::new();
    let mut policy = Policy::default();
    policy.lease = Duration::from_millis(90);
    let l = ledger.clone();
    let entries = vec![Entry::new("taken", ()).unwrap()];
    let report = Pipeline::builder(ledger.clone())
        .source(Source::stream(futures::stream::iter(entries)))
        .process(move |a| {
            let l = l.clone();
            async move {
                // An operator removes the key by force while it runs.
                l.remove(&[a.key().clone()], true).await.unwrap();
                a.lease_lost().cancelled().await;
                Ok::<_, std::io::Error>(())
            }
        })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .policy(policy)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.completed, 0);
    assert_eq!(ledger.get(&Key::new("taken").unwrap()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_poll_is_counted_and_polling_goes_on() {
    let polls = Arc::new(AtomicU32::new(0));
    let p = polls.clone();
    let report = Pipeline::builder(MemoryLedger::new())
        .source(Source::poll(Duration::from_millis(2), move || {
            let n = p.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err(std::io::Error::other("source down")),
                    1 => panic!("poll panicked"),
                    2 => Ok(vec![Entry::new("k", ()).unwrap()]),
                    _ => Ok(vec![]),
                }
            }
        }))
        .process(|_| async { Ok::<_, std::io::Error>(()) })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .stop_when_idle()
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((report.poll_errors, report.completed), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_on_a_timer_without_unblocking_early() {
    let ledger = MemoryLedger::new();
    let mut policy = Policy::default();
    policy.retention.completed = Keep::newest(10);
    policy.purge_every = Duration::from_millis(10);
    let stop = CancellationToken::new();
    let entries: Vec<_> = (0..50)
        .map(|i| Entry::new(format!("k{i:02}"), i).unwrap())
        .collect();
    let l = ledger.clone();
    let s = stop.clone();
    let watcher = tokio::spawn(async move {
        loop {
            let st = l.stats().await.unwrap();
            if st.completed == 10 && st.queued + st.running == 0 {
                s.cancel();
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    Pipeline::builder(ledger.clone())
        .source(Source::stream(
            futures::stream::iter(entries).chain(futures::stream::pending()),
        ))
        .process(|_| async { Ok::<_, std::io::Error>(()) })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .policy(policy)
        .shutdown(stop)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    watcher.await.unwrap();
    assert_eq!(
        ledger.stats().await.unwrap().completed,
        10,
        "purged down to the newest 10"
    );
}

/// The reported case: a record another instance completed at ordered version 2, then polled
/// from a snapshot still holding version 1. That offer is outdated: not processed, counted in
/// `Report::outdated` and not as a duplicate, and a pipeline that stops when drained stops.
/// A poll at version 3 is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outdated_snapshot_is_not_processed_and_a_newer_one_is() {
    let ledger = MemoryLedger::new();
    let policy = Policy::default();
    let key = Key::new("rec/1").unwrap();
    let done = Offer::new(key.clone()).with_version(Version::ordered(2));
    let lease = ledger.offer_and_start(&policy, &[done]).await.unwrap()[0]
        .lease()
        .expect("accepted");
    let claim = Claim {
        key: key.clone(),
        token: lease.token,
    };
    ledger.complete(&[claim]).await.unwrap()[0]
        .clone()
        .expect("completed");

    let run = |version: u64| {
        let processed = Arc::new(Mutex::new(Vec::new()));
        let seen = processed.clone();
        let source = Source::poll(Duration::from_millis(5), move || async move {
            let entry = Entry::new("rec/1", version).map(|e| e.with_ordered_version(version));
            Ok::<_, std::io::Error>([entry])
        });
        let run = Pipeline::builder(ledger.clone())
            .source(source)
            .process(move |a| {
                seen.lock().unwrap().push(*a.payload());
                async { Ok::<_, std::io::Error>(()) }
            })
            .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
            .policy(policy.clone())
            .stop_when_drained()
            .build()
            .unwrap()
            .run();
        async move {
            let report = tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .expect("a drained pipeline stops by itself")
                .unwrap();
            let processed = processed.lock().unwrap().clone();
            (report, processed)
        }
    };

    let (old, processed) = run(1).await;
    assert!(processed.is_empty(), "version 1 after 2: {processed:?}");
    assert!(old.outdated >= 1, "{old}");
    assert_eq!(
        (old.accepted, old.completed, old.duplicates),
        (0, 0, 0),
        "{old}"
    );
    assert_eq!(old.polled, old.outdated, "{old}");
    assert!(old.to_string().contains("outdated"), "{old}");
    let rec = ledger.get(&key).await.unwrap().expect("a record");
    assert_eq!(
        (rec.state, rec.version, rec.token),
        (State::Completed, Some(Version::ordered(2)), lease.token),
        "left as it was"
    );

    let (new, processed) = run(3).await;
    assert_eq!(processed, vec![3], "version 3 after 2");
    assert_eq!((new.completed, new.outdated), (1, 0), "{new}");
    let rec = ledger.get(&key).await.unwrap().expect("a record");
    assert_eq!(
        (rec.state, rec.version),
        (State::Completed, Some(Version::ordered(3)))
    );
}

#[test]
fn building_without_the_essentials_is_a_clear_error() {
    let err = Pipeline::builder::<u32>(MemoryLedger::new())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("source"), "{err}");
    let err = Pipeline::builder(MemoryLedger::new())
        .source(Source::stream(futures::stream::iter(
            Vec::<Entry<u32>>::new(),
        )))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("process"), "{err}");
    let err = Pipeline::builder(MemoryLedger::new())
        .source(Source::stream(futures::stream::iter(
            Vec::<Entry<u32>>::new(),
        )))
        .process(|_| async { Ok::<_, std::io::Error>(()) })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .concurrency(0)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("concurrency"), "{err}");
}
