//! Every `# Cancel safety` promise of the queue and the pipeline, checked by dropping the
//! future mid-flight: the ledger answers slowly (after applying the call), and the caller
//! gives up before the answer arrives.

use qupid::LedgerAdmin;
use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use qupid::clock::ManualClock;
use qupid::ledger::State;
use qupid::observe::names;
use qupid::queue::FailOutcome;
use qupid::{Entry, ErrorKind, Key, MemoryLedger, Pipeline, Policy, Published, Queue, Source};
use qupid_testkit::FaultyLedger;

type Slow = FaultyLedger<MemoryLedger>;

fn entry(k: &str) -> Entry<u32> {
    Entry::new(k, 1).unwrap()
}

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

/// A memory ledger on a manual clock, behind a wrapper that answers `delay` late; `grouping`
/// says whether jobs call it directly (`true`) or through the queue's batching task.
fn slow_ledger(grouping: bool) -> (Slow, MemoryLedger, ManualClock) {
    let clock = ManualClock::new();
    let inner = MemoryLedger::with_clock(clock.clone());
    (
        FaultyLedger::grouping(inner.clone(), grouping),
        inner,
        clock,
    )
}

async fn state(l: &MemoryLedger, k: &str) -> Option<State> {
    l.get(&key(k)).await.unwrap().map(|r| r.state)
}

/// Waits (up to 5 s) until `k` is in `want` (`None`: absent).
async fn until_state(l: &MemoryLedger, k: &str, want: Option<State>) {
    for _ in 0..500 {
        if state(l, k).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{k} stayed {:?}, expected {want:?}", state(l, k).await);
}

/// The counters and gauges recorded so far, by name.
fn metrics(s: &Snapshotter) -> HashMap<String, f64> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| {
            let v = match v {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(_) => f64::NAN,
            };
            (k.key().name().to_owned(), v)
        })
        .collect()
}

/// The queued and running gauges, then the completed, failed and released counters. (A
/// snapshot resets what it reads, so each test takes one, at its end.)
fn books(s: &Snapshotter) -> [f64; 5] {
    let m = metrics(s);
    [
        names::QUEUED,
        names::RUNNING,
        names::COMPLETED,
        names::FAILED,
        names::RELEASED,
    ]
    .map(|n| m.get(n).copied().unwrap_or(0.0))
}

const GIVE_UP: Duration = Duration::from_millis(20);
/// How late the slow ledger answers. A test that saw a call applied waits three times this
/// for the answer to reach the books.
const SLOW: Duration = Duration::from_millis(200);

/// `publish`, `try_publish` and `publish_batch`: "space is reserved before the offer; if
/// dropped during the offer, the key may be accepted without a job; its lease expires and the
/// next poll offers it again". Whatever is dropped, the buffer keeps its whole capacity.
#[tokio::test]
async fn dropped_publishes_give_their_buffer_space_back() {
    let (slow, inner, clock) = slow_ledger(true);
    let queue: Queue<Slow, u32> = Queue::builder(slow.clone()).capacity(2).build().unwrap();
    slow.answer_after(SLOW);
    let give_up = || tokio::time::sleep(GIVE_UP);
    tokio::select! {
        _ = queue.publish(entry("a")) => panic!("answered early"),
        _ = give_up() => {}
    }
    tokio::select! {
        _ = queue.try_publish(entry("b")) => panic!("answered early"),
        _ = give_up() => {}
    }
    tokio::select! {
        _ = queue.publish_batch(vec![entry("c"), entry("d")]) => panic!("answered early"),
        _ = give_up() => {}
    }
    slow.answer_after(Duration::ZERO);
    // The capacity is whole: two entries fit, the third does not.
    for k in ["x", "y"] {
        let out = queue.try_publish(entry(k)).await;
        assert!(matches!(out, Ok(Published::Accepted(_))), "{k}: {out:?}");
    }
    let full = queue.try_publish(entry("z")).await.unwrap_err();
    assert_eq!(full.kind(), ErrorKind::Full);
    // The dropped offers were applied without a job: the keys wait for their leases to
    // expire, and are then offered again.
    assert_eq!(state(&inner, "a").await, Some(State::Queued));
    assert!(matches!(
        queue.try_publish(entry("a")).await,
        Err(e) if e.kind() == ErrorKind::Full
    ));
    let sub = queue.subscribe();
    for _ in 0..2 {
        sub.recv().await.unwrap().complete().await.unwrap();
    }
    assert_eq!(
        queue.publish(entry("a")).await.unwrap(),
        Published::Duplicate(State::Queued)
    );
    clock.advance(Policy::default().lease * 2);
    assert!(matches!(
        queue.publish(entry("a")).await.unwrap(),
        Published::Accepted(_)
    ));
}

/// `Job::complete` through the batching task: "if dropped halfway, the key may or may not be
/// Completed; if not, it is released". Here it was completed, and the release sent from
/// `Drop` afterwards must not move the gauges a second time.
#[tokio::test]
async fn a_dropped_completion_leaves_the_gauges_whole() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let (slow, inner, _clock) = slow_ledger(false);
    let queue: Queue<Slow, u32> =
        metrics::with_local_recorder(&recorder, || Queue::builder(slow.clone()).build().unwrap());
    let sub = queue.subscribe();
    queue.publish(entry("a")).await.unwrap();
    let job = sub.recv().await.unwrap();
    slow.answer_after(SLOW);
    assert!(tokio::time::timeout(GIVE_UP, job.complete()).await.is_err());
    until_state(&inner, "a", Some(State::Completed)).await;
    // Let the release from `Drop` reach the ledger and be refused.
    tokio::time::sleep(SLOW * 3).await;
    assert_eq!(state(&inner, "a").await, Some(State::Completed));
    // Queued and running gauges at 0; completed once, released never.
    assert_eq!(books(&snap), [0.0, 0.0, 1.0, 0.0, 0.0]);
}

/// `Job::fail`: "if dropped halfway, the failure may or may not be recorded; the job is
/// released". Recorded as a retry, then released: the key is absent, nothing held.
#[tokio::test]
async fn a_dropped_failure_releases_the_key() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let (slow, inner, _clock) = slow_ledger(false);
    let queue: Queue<Slow, u32> =
        metrics::with_local_recorder(&recorder, || Queue::builder(slow.clone()).build().unwrap());
    let sub = queue.subscribe();
    queue.publish(entry("a")).await.unwrap();
    let job = sub.recv().await.unwrap();
    slow.answer_after(SLOW);
    assert!(tokio::time::timeout(GIVE_UP, job.fail("boom"))
        .await
        .is_err());
    until_state(&inner, "a", None).await;
    tokio::time::sleep(SLOW * 3).await;
    assert_eq!(queue.held(), 0);
    assert_eq!(books(&snap), [0.0, 0.0, 0.0, 1.0, 1.0]);
}

/// `Job::start`: "the attempt may or may not have started in the ledger; the job itself is
/// unchanged, and calling `start` again begins the attempt, or finds it begun".
#[tokio::test]
async fn a_dropped_start_can_be_started_again() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let (slow, inner, _clock) = slow_ledger(false);
    let queue: Queue<Slow, u32> =
        metrics::with_local_recorder(&recorder, || Queue::builder(slow.clone()).build().unwrap());
    let sub = queue.subscribe();
    queue.publish(entry("a")).await.unwrap();
    let job = sub.recv().await.unwrap();
    let FailOutcome::Retry(mut job) = job.fail("first").await.unwrap() else {
        panic!("attempts remain");
    };
    assert_eq!((job.attempt(), job.is_running()), (1, false));
    slow.answer_after(SLOW);
    assert!(tokio::time::timeout(GIVE_UP, job.start()).await.is_err());
    assert_eq!((job.attempt(), job.is_running()), (1, false), "unchanged");
    until_state(&inner, "a", Some(State::Running)).await;
    slow.answer_after(Duration::ZERO);
    assert_eq!(
        job.start().await.unwrap(),
        2,
        "the attempt the ledger began"
    );
    assert!(job.is_running());
    let record = inner.get(&key("a")).await.unwrap().unwrap();
    assert_eq!(record.attempts, 2);
    assert_eq!(books(&snap), [0.0, 1.0, 0.0, 1.0, 0.0]);
}

/// `Subscriber::recv`: "if dropped while starting a job, that job is released".
#[tokio::test]
async fn a_dropped_receive_releases_the_job_it_was_starting() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let (slow, inner, _clock) = slow_ledger(false);
    let queue: Queue<Slow, u32> =
        metrics::with_local_recorder(&recorder, || Queue::builder(slow.clone()).build().unwrap());
    let sub = queue.subscribe();
    queue.publish(entry("a")).await.unwrap();
    slow.answer_after(SLOW);
    assert!(tokio::time::timeout(GIVE_UP, sub.recv()).await.is_err());
    until_state(&inner, "a", None).await;
    tokio::time::sleep(SLOW * 3).await;
    assert_eq!(queue.held(), 0);
    assert_eq!(books(&snap), [0.0, 0.0, 0.0, 0.0, 1.0]);
}

/// `Job::release`: "if dropped halfway, the release is sent again from `Drop`" — and it is
/// counted once.
#[tokio::test]
async fn a_dropped_release_is_sent_again_and_counted_once() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let (slow, inner, _clock) = slow_ledger(false);
    let queue: Queue<Slow, u32> =
        metrics::with_local_recorder(&recorder, || Queue::builder(slow.clone()).build().unwrap());
    let sub = queue.subscribe();
    queue.publish(entry("a")).await.unwrap();
    let job = sub.recv().await.unwrap();
    slow.answer_after(SLOW);
    assert!(tokio::time::timeout(GIVE_UP, job.release()).await.is_err());
    until_state(&inner, "a", None).await;
    tokio::time::sleep(SLOW * 3).await;
    assert_eq!(queue.held(), 0);
    assert_eq!(books(&snap), [0.0, 0.0, 0.0, 0.0, 1.0]);
}

/// `Pipeline::run`: "dropping the future abandons the run without a graceful stop: jobs are
/// dropped (and so released)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_run_releases_what_it_held() {
    for grouping in [true, false] {
        let (slow, inner, _clock) = slow_ledger(grouping);
        let source = Source::poll(Duration::from_millis(5), || async {
            Ok::<_, std::io::Error>(
                (0..200)
                    .map(|i| entry(&format!("k{i}")))
                    .collect::<Vec<_>>(),
            )
        });
        let run = Pipeline::builder(slow)
            .source(source)
            .process(|_| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, std::io::Error>(())
            })
            .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
            .concurrency(8)
            .build()
            .unwrap()
            .run();
        assert!(tokio::time::timeout(Duration::from_millis(300), run)
            .await
            .is_err());
        let mut stats = inner.stats().await.unwrap();
        for _ in 0..500 {
            if stats.queued + stats.running == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            stats = inner.stats().await.unwrap();
        }
        assert_eq!(
            (stats.queued, stats.running),
            (0, 0),
            "grouping {grouping}: nothing left leased"
        );
        assert!(stats.completed > 0, "grouping {grouping}: it ran");
    }
}
