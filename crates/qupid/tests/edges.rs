//! The edges where production lives: bad input from a source, errors that retrying cannot
//! fix, and outages that last.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use qupid::{Entry, ErrorKind, Key, Ledger, LedgerAdmin, MemoryLedger, Offer, Pipeline, Source};
use qupid_testkit::FaultyLedger;

/// Every log line of this test binary. One global subscriber: a per-thread one can miss
/// events whose call site another thread registered first.
#[derive(Clone)]
struct Logs(Arc<Mutex<Vec<u8>>>);

fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs(Arc::default());
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
        logs
    })
}

impl Logs {
    /// The lines that contain every one of `parts`.
    fn lines(&self, parts: &[&str]) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ok_save() -> impl Fn(qupid::Attempt<u32>, ()) -> futures::future::Ready<std::io::Result<()>> {
    |_, ()| futures::future::ready(Ok(()))
}

/// One empty key and one of 1,500 bytes among good ones: the good ones are processed, the
/// bad ones skipped and counted at every poll, logged once each, and an idle pipeline stops.
#[tokio::test]
async fn invalid_entries_are_skipped_counted_and_logged_once() {
    let logs = logs();
    let long = "x".repeat(1500);
    let source = Source::poll(Duration::from_millis(5), move || {
        let keys = [
            "good/1".to_owned(),
            String::new(),
            long.clone(),
            "good/2".to_owned(),
        ];
        async move { Ok::<_, std::io::Error>(keys.into_iter().map(|k| Entry::new(k, 1u32))) }
    })
    .named("bad-keys");
    let run = Pipeline::builder(MemoryLedger::new())
        .source(source)
        .process(|_| async { Ok::<_, std::io::Error>(()) })
        .save(ok_save())
        .stop_when_idle()
        .build()
        .unwrap()
        .run();
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("an idle pipeline stops by itself")
        .unwrap();
    assert_eq!(report.completed, 2, "{report}");
    // Two bad entries per poll, and at least two polls (one to work, one to find it idle).
    assert!(report.invalid >= 4 && report.invalid % 2 == 0, "{report}");
    assert_eq!(
        report.polled,
        report.accepted + report.duplicates,
        "invalid entries are not offered"
    );
    let warned = logs.lines(&["source=bad-keys", "skipped an invalid entry"]);
    assert_eq!(warned.len(), 2, "once per distinct bad entry: {warned:#?}");
    assert!(
        warned.iter().any(|l| l.contains("must not be empty")),
        "{warned:#?}"
    );
    let long_one = warned
        .iter()
        .find(|l| l.contains("1500 bytes"))
        .expect("the long key is named");
    assert!(
        long_one.contains(&format!("key \"{}\"… must", "x".repeat(40))),
        "named by a readable excerpt: {long_one}"
    );
}

/// A stream of results: the errors are skipped, the stream goes on to its end.
#[tokio::test]
async fn a_stream_of_results_skips_its_errors() {
    let items = vec![
        Entry::new("a", 1u32),
        Entry::new("", 2),
        Entry::new("b", 3),
        Entry::new("c", 4).and_then(|e| e.with_version("")),
    ];
    let report = Pipeline::builder(MemoryLedger::new())
        .source(Source::stream(futures::stream::iter(items).boxed()))
        .process(|_| async { Ok::<_, std::io::Error>(()) })
        .save(ok_save())
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((report.completed, report.invalid), (2, 2), "{report}");
}

/// A source of `n` records `{prefix}/{i}`, all of them at every poll, as an API that cannot
/// tell what was handled.
fn all_of(prefix: &'static str, n: u32) -> Source<u32> {
    Source::poll(Duration::from_millis(10), move || async move {
        Ok::<_, std::io::Error>((0..n).map(move |i| Entry::new(format!("{prefix}/{i}"), i)))
    })
    .named(prefix)
}

fn slow_process(
    ms: u64,
) -> impl Fn(qupid::Attempt<u32>) -> futures::future::BoxFuture<'static, std::io::Result<()>> {
    move |_| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        })
    }
}

/// An error that retrying cannot fix (a corrupt ledger) ends the run with that error,
/// within moments, instead of a WARN every poll and an `Ok` with nothing done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_ledger_error_ends_the_run_with_that_error() {
    let faulty = FaultyLedger::new(MemoryLedger::new());
    let pipeline = Pipeline::builder(faulty.clone())
        .source(all_of("fatal", 1000))
        .process(slow_process(5))
        .save(ok_save())
        .concurrency(4)
        .build()
        .unwrap();
    let progress = pipeline.progress();
    let run = tokio::spawn(pipeline.run());
    while progress.snapshot().completed < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    faulty.break_with(Some(ErrorKind::Corrupt));
    let out = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the run ends by itself")
        .unwrap();
    let e = out.expect_err("the run fails");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("injected fault"), "{e}");
}

/// An outage that outlasts `give_up_after` ends the run with the ledger's error; meanwhile the
/// progress says the ledger is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lasting_outage_ends_the_run_past_give_up_after() {
    let faulty = FaultyLedger::new(MemoryLedger::new());
    let pipeline = Pipeline::builder(faulty.clone())
        .source(all_of("outage", 100))
        .process(slow_process(1))
        .save(ok_save())
        .give_up_after(Duration::from_millis(500))
        .build()
        .unwrap();
    let progress = pipeline.progress();
    faulty.set_down(true);
    let run = tokio::spawn(pipeline.run());
    let mut seen_down = None;
    for _ in 0..200 {
        if let Some(d) = progress.ledger_down_for() {
            seen_down = Some((d, progress.ledger_error()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, error) = seen_down.expect("the progress says the ledger is down");
    assert!(error.is_some_and(|e| e.contains("injected fault")));
    let e = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the run ends by itself")
        .unwrap()
        .expect_err("the run fails");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("give_up_after"), "{e}");
}

/// An outage longer than a lease is logged once as an ERROR, and its end too; without
/// `give_up_after` the run rides it out and finishes its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_a_lease_is_logged_and_ridden_out() {
    let logs = logs();
    let faulty = FaultyLedger::new(MemoryLedger::new());
    let mut policy = qupid::Policy::default();
    policy.lease = Duration::from_millis(200);
    let pipeline = Pipeline::builder(faulty.clone())
        .name("long-outage")
        .source(all_of("ridden", 50))
        .process(slow_process(1))
        .save(ok_save())
        .policy(policy)
        .stop_when_idle()
        .build()
        .unwrap();
    let progress = pipeline.progress();
    faulty.set_down(true);
    let run = tokio::spawn(pipeline.run());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(progress.ledger_down_for() >= Some(Duration::from_millis(400)));
    faulty.set_down(false);
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run ends by itself")
        .unwrap()
        .expect("an outage is ridden out");
    assert_eq!(report.completed, 50, "{report}");
    assert!(report.ledger_errors > 0, "{report}");
    assert_eq!(progress.ledger_down_for(), None);
    let down = logs.lines(&["pipeline=long-outage", "ERROR", "longer than a lease"]);
    assert_eq!(down.len(), 1, "{down:#?}");
    let back = logs.lines(&["pipeline=long-outage", "answers again"]);
    assert_eq!(back.len(), 1, "{back:#?}");
}

/// Keys held by a crashed instance (accepted, started, never ended): `stop_when_idle` stops
/// without them, `stop_when_drained` waits for their leases to expire, takes them over,
/// processes them, and stops by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_when_drained_takes_over_what_a_crashed_instance_held() {
    let ledger = MemoryLedger::new();
    let mut policy = qupid::Policy::default();
    policy.lease = Duration::from_millis(300);
    // The crashed instance: took keys 0..10 and died holding them.
    let stranded: Vec<Offer> = (0..10)
        .map(|i| Offer::new(Key::new(format!("drain/{i}")).unwrap()))
        .collect();
    let taken = ledger.offer_and_start(&policy, &stranded).await.unwrap();
    assert!(taken.iter().all(|o| o.lease().is_some()));
    let pipeline = |until_drained: bool| {
        let b = Pipeline::builder(ledger.clone())
            .source(all_of("drain", 40))
            .process(slow_process(1))
            .save(ok_save())
            .policy(policy.clone());
        if until_drained {
            b.stop_when_drained()
        } else {
            b.stop_when_idle()
        }
        .build()
        .unwrap()
        .run()
    };
    let idle = pipeline(false).await.unwrap();
    assert_eq!(
        idle.completed, 30,
        "idle stops without the stranded keys: {idle}"
    );
    assert!(idle.duplicates_in_flight >= 10, "{idle}");
    assert_eq!(ledger.stats().await.unwrap().completed, 30);

    let drained = tokio::time::timeout(Duration::from_secs(10), pipeline(true))
        .await
        .expect("a drained pipeline stops by itself")
        .unwrap();
    assert_eq!(
        drained.completed, 10,
        "the stranded keys, taken over: {drained}"
    );
    assert!(drained.duplicates_finished() >= 30, "{drained}");
    let stats = ledger.stats().await.unwrap();
    assert_eq!((stats.completed, stats.queued, stats.running), (40, 0, 0));
}

/// A job knows its lease's deadline by its own clock: an attempt whose lease ran out while it
/// processed (renewals failing, as in a paused process) does not begin its save. It is
/// abandoned and counted, its key released, and the next attempt saves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_save_begins_past_the_lease_deadline() {
    let faulty = FaultyLedger::new(MemoryLedger::new());
    let mut policy = qupid::Policy::default();
    policy.lease = Duration::from_millis(300);
    let saves = Arc::new(AtomicU32::new(0));
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (f, s) = (faulty.clone(), saves.clone());
    // Polled every 500 ms: nothing offers the key again while the first attempt works.
    let source = Source::poll(Duration::from_millis(500), || async {
        Ok::<_, std::io::Error>([Entry::new("deadline/0", 0u32)])
    });
    let report = Pipeline::builder(faulty.clone())
        .source(source)
        .process(move |a| {
            let f = f.clone();
            // (Released, the key starts afresh: its second attempt is number 1 again.)
            let first = first.swap(false, Ordering::SeqCst);
            async move {
                if first {
                    // Renewals stall for longer than the lease while this attempt works.
                    f.stall_renewals(true);
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    f.stall_renewals(false);
                    assert!(a.is_expired());
                }
                Ok::<_, std::io::Error>(())
            }
        })
        .save(move |_, ()| {
            s.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, std::io::Error>(()) }
        })
        .policy(policy)
        .stop_when_drained()
        .build()
        .unwrap()
        .run();
    let report = tokio::time::timeout(Duration::from_secs(10), report)
        .await
        .expect("stops")
        .unwrap();
    assert_eq!(report.lease_expired, 1, "{report}");
    assert_eq!(report.completed, 1, "{report}");
    assert_eq!(
        saves.load(Ordering::SeqCst),
        1,
        "only the second attempt saved"
    );
}

/// Renewals move the deadline: an attempt working for three leases saves normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_move_the_deadline() {
    let mut policy = qupid::Policy::default();
    policy.lease = Duration::from_millis(150);
    let report = Pipeline::builder(MemoryLedger::new())
        .source(all_of("renewed", 3))
        .process(|a| async move {
            let first = a.deadline();
            tokio::time::sleep(Duration::from_millis(450)).await;
            assert!(a.deadline() > first + Duration::from_millis(200), "renewed");
            assert!(!a.is_expired());
            Ok::<_, std::io::Error>(())
        })
        .save(ok_save())
        .policy(policy)
        .stop_when_drained()
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((report.completed, report.lease_expired), (3, 0), "{report}");
}

/// A poll's entries are offered only while fresh: with a slow worker and a small buffer, the
/// entries still waiting past `max_snapshot_age` are dropped, counted, and brought back by the
/// next poll, so no entry starts long after its poll read it — and all are processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_offered_only_while_fresh() {
    const AGE: Duration = Duration::from_millis(150);
    const WORK: Duration = Duration::from_millis(30);
    let source = Source::poll(Duration::from_millis(10), || async {
        let read_at = tokio::time::Instant::now();
        Ok::<_, std::io::Error>((0..20).map(move |i| Entry::new(format!("fresh/{i}"), read_at)))
    })
    .max_snapshot_age(AGE);
    let oldest = Arc::new(Mutex::new(Duration::ZERO));
    let o = oldest.clone();
    let report = Pipeline::builder(MemoryLedger::new())
        .source(source)
        .process(move |a| {
            let age = a.payload().elapsed();
            let mut oldest = o.lock().unwrap();
            *oldest = (*oldest).max(age);
            async {
                tokio::time::sleep(WORK).await;
                Ok::<_, std::io::Error>(())
            }
        })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .concurrency(1)
        .buffer(1)
        .stop_when_drained()
        .build()
        .unwrap()
        .run();
    let report = tokio::time::timeout(Duration::from_secs(20), report)
        .await
        .expect("stops")
        .unwrap();
    assert_eq!(report.completed, 20, "{report}");
    assert!(report.stale > 0, "{report}");
    let oldest = *oldest.lock().unwrap();
    // Offered within AGE of its poll, then at most a buffer's wait (one attempt) and a little.
    assert!(
        oldest <= AGE + WORK * 3,
        "an entry started {oldest:?} after its poll read it"
    );
}
