//! The queue: publish, subscribe, jobs as guards, renewal, lost leases.

use qupid::LedgerAdmin;
use std::time::Duration;

use qupid::ledger::{Ledger, ListQuery, Removed, State};
use qupid::queue::FailOutcome;
use qupid::{Entry, ErrorKind, Key, MemoryLedger, Policy, Published, Queue};

fn entry(k: &str) -> Entry<u32> {
    Entry::new(k, 7).unwrap()
}

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

async fn state(l: &MemoryLedger, k: &str) -> Option<State> {
    l.get(&key(k)).await.unwrap().map(|r| r.state)
}

#[tokio::test]
async fn publish_dedups_and_subscribers_get_started_jobs() {
    let ledger = MemoryLedger::new();
    let queue = Queue::builder(ledger.clone()).build().unwrap();
    let sub = queue.subscribe();
    assert!(matches!(
        queue.publish(entry("a")).await.unwrap(),
        Published::Accepted(_)
    ));
    assert_eq!(
        queue.publish(entry("a")).await.unwrap(),
        Published::Duplicate(State::Queued)
    );
    let job = sub.recv().await.unwrap();
    assert_eq!(
        (job.key().as_str(), job.attempt(), *job.payload()),
        ("a", 1, 7)
    );
    assert_eq!(state(&ledger, "a").await, Some(State::Running));
    job.complete().await.unwrap();
    assert_eq!(state(&ledger, "a").await, Some(State::Completed));
    assert_eq!(
        queue.publish(entry("a")).await.unwrap(),
        Published::Duplicate(State::Completed)
    );
}

#[tokio::test]
async fn try_publish_says_full_and_gives_the_entry_back_without_offering() {
    let ledger = MemoryLedger::new();
    let queue = Queue::builder(ledger.clone()).capacity(2).build().unwrap();
    queue.try_publish(entry("a")).await.unwrap();
    queue.try_publish(entry("b")).await.unwrap();
    let err = queue.try_publish(entry("c")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Full);
    assert_eq!(err.into_entries()[0].key.as_str(), "c");
    assert_eq!(
        state(&ledger, "c").await,
        None,
        "a full queue offers nothing"
    );
    // A duplicate gives its place back at once.
    assert!(queue.try_publish(entry("a")).await.is_err(), "still full");
    let sub = queue.subscribe();
    let job = sub.recv().await.unwrap();
    assert!(
        queue.try_publish(entry("c")).await.is_ok(),
        "a received job frees a place"
    );
    drop(job);
}

#[tokio::test]
async fn publish_waits_for_space() {
    let queue = Queue::builder(MemoryLedger::new())
        .capacity(1)
        .build()
        .unwrap();
    queue.publish(entry("a")).await.unwrap();
    let q = queue.clone();
    let waiting = tokio::spawn(async move { q.publish(entry("b")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiting.is_finished(),
        "publish waits while the buffer is full"
    );
    let job = queue.subscribe().recv().await.unwrap();
    waiting.await.unwrap().unwrap();
    job.complete().await.unwrap();
}

#[tokio::test]
async fn a_dropped_job_is_released_and_offered_again() {
    let ledger = MemoryLedger::new();
    let queue = Queue::builder(ledger.clone()).build().unwrap();
    let sub = queue.subscribe();
    queue.publish(entry("a")).await.unwrap();
    drop(sub.recv().await.unwrap());
    for _ in 0..100 {
        if state(&ledger, "a").await.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(state(&ledger, "a").await, None, "released on drop");
    assert!(matches!(
        queue.publish(entry("a")).await.unwrap(),
        Published::Accepted(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn leases_are_renewed_while_a_job_lives() {
    let ledger = MemoryLedger::new();
    let mut policy = Policy::default();
    policy.lease = Duration::from_secs(3);
    let queue = Queue::builder(ledger.clone())
        .policy(policy.clone())
        .build()
        .unwrap();
    let job = {
        queue.publish(entry("a")).await.unwrap();
        queue.subscribe().recv().await.unwrap()
    };
    // Ten leases later, the key is still held: the renewer kept it.
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let offered = ledger.offer(&policy, &[entry("a").offer()]).await.unwrap();
    assert_eq!(
        offered[0],
        qupid::ledger::Offered::Duplicate(State::Running)
    );
    assert!(!job.lease_lost().is_cancelled());
    job.complete().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_cancels_the_job() {
    let ledger = MemoryLedger::new();
    let mut policy = Policy::default();
    policy.lease = Duration::from_secs(3);
    let queue = Queue::builder(ledger.clone())
        .policy(policy)
        .build()
        .unwrap();
    queue.publish(entry("a")).await.unwrap();
    let job = queue.subscribe().recv().await.unwrap();
    assert_eq!(
        ledger.remove(&[key("a")], true).await.unwrap(),
        vec![Removed::Removed]
    );
    tokio::time::timeout(Duration::from_secs(5), job.lease_lost().cancelled())
        .await
        .expect("renewer notices");
    let err = job.complete().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
    assert_eq!(
        state(&ledger, "a").await,
        None,
        "a fenced completion writes nothing"
    );
}

#[tokio::test]
async fn failing_gives_the_job_back_until_it_is_dead() {
    let ledger = MemoryLedger::new();
    let mut policy = Policy::default();
    policy.max_attempts = 2;
    let queue = Queue::builder(ledger.clone())
        .policy(policy)
        .build()
        .unwrap();
    queue.publish(entry("a")).await.unwrap();
    let job = queue.subscribe().recv().await.unwrap();
    let FailOutcome::Retry(mut job) = job.fail("first").await.unwrap() else {
        panic!("retry")
    };
    assert_eq!(state(&ledger, "a").await, Some(State::Queued));
    assert_eq!(job.start().await.unwrap(), 2);
    let FailOutcome::Dead { attempts } = job.fail("second").await.unwrap() else {
        panic!("dead")
    };
    assert_eq!(attempts, 2);
    let rec = ledger.get(&key("a")).await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.last_error.as_deref()),
        (State::Dead, Some("second"))
    );
}

#[tokio::test]
async fn a_closed_queue_refuses_and_releases_what_is_buffered() {
    let ledger = MemoryLedger::new();
    let queue = Queue::builder(ledger.clone()).build().unwrap();
    queue
        .publish_batch(vec![entry("a"), entry("b")])
        .await
        .unwrap();
    queue.close();
    let err = queue.publish(entry("c")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert_eq!(err.into_entries().len(), 1);
    assert_eq!(queue.release_buffered(), 2);
    queue.shutdown().await;
    let queued = ledger.list(&ListQuery::new(State::Queued)).await.unwrap();
    assert!(
        queued.records.is_empty(),
        "released keys are absent: {queued:?}"
    );
    assert_eq!(ledger.stats().await.unwrap().total(), 0);
}

#[tokio::test(start_paused = true)]
async fn starting_on_publish_runs_keys_at_once_and_skips_lost_ones() {
    let ledger = MemoryLedger::new();
    let mut policy = Policy::default();
    policy.lease = Duration::from_secs(3);
    let queue = Queue::builder(ledger.clone())
        .policy(policy)
        .start_on_publish(true)
        .build()
        .unwrap();
    queue.publish(entry("a")).await.unwrap();
    queue.publish(entry("b")).await.unwrap();
    let rec = ledger.get(&key("a")).await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.attempts),
        (State::Running, 1),
        "started by the publish, before any subscriber"
    );
    assert_eq!(
        queue.publish(entry("a")).await.unwrap(),
        Published::Duplicate(State::Running)
    );
    // b's lease is lost while it waits in the buffer: the renewer finds out.
    assert_eq!(
        ledger.remove(&[key("b")], true).await.unwrap(),
        vec![Removed::Removed]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sub = queue.subscribe();
    let job = sub.recv().await.unwrap();
    assert_eq!((job.key().as_str(), job.attempt()), ("a", 1));
    assert!(job.is_running());
    job.complete().await.unwrap();
    assert_eq!(state(&ledger, "a").await, Some(State::Completed));
    queue.close();
    assert!(
        sub.recv().await.is_none(),
        "the job that lost its lease while buffered is skipped"
    );
    assert_eq!(state(&ledger, "b").await, None);
}

#[tokio::test]
async fn publish_batch_until_gives_back_what_it_could_not_offer_in_time() {
    let ledger = MemoryLedger::new();
    let queue = Queue::builder(ledger.clone()).capacity(2).build().unwrap();
    let entries: Vec<_> = ["a", "b", "c", "d", "e"].into_iter().map(entry).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
    let (published, late) = queue.publish_batch_until(entries, deadline).await.unwrap();
    assert_eq!(published.len(), 2, "the buffer's capacity, in time");
    assert!(published.iter().all(|p| !p.is_duplicate()));
    let late: Vec<&str> = late.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(late, ["c", "d", "e"], "given back in order, unoffered");
    for k in ["c", "d", "e"] {
        assert_eq!(state(&ledger, k).await, None, "{k} was not offered");
    }
}

/// A loop of one's own over the queue's public API does what the pipeline does: an
/// `Attempt` from the job, a deadline handle, and a completion recorded without waiting
/// for the answer.
#[tokio::test(start_paused = true)]
async fn jobs_complete_later_and_hand_out_their_deadline() {
    let ledger = MemoryLedger::new();
    let mut policy = Policy::default();
    policy.lease = Duration::from_secs(10);
    let queue = Queue::builder(ledger.clone())
        .policy(policy)
        .build()
        .unwrap();
    let sub = queue.subscribe();
    queue.publish(entry("a")).await.unwrap();
    let job = sub.recv().await.unwrap();
    let attempt = qupid::Attempt::of(&job);
    assert_eq!(
        (attempt.key().as_str(), attempt.token(), attempt.number()),
        ("a", job.token(), 1)
    );
    assert!(std::sync::Arc::ptr_eq(
        &job.shared_entry(),
        &job.shared_entry()
    ));
    let deadline = job.lease_deadline();
    assert_eq!(deadline.get(), job.deadline());
    assert_eq!(attempt.deadline(), job.deadline());
    assert!(!deadline.is_expired());

    job.complete_later();
    // The completion goes out with the queue's next batch.
    for _ in 0..100 {
        if state(&ledger, "a").await == Some(State::Completed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state(&ledger, "a").await, Some(State::Completed));
    assert_eq!(queue.held(), 0, "the claim is given up");
}

#[tokio::test]
async fn counters_made_beforehand_count_the_queue_and_its_purges() {
    use qupid::observe::Counters;
    use qupid::Keep;
    use qupid_testkit::FaultyLedger;
    use std::sync::Arc;

    let counters = Arc::new(Counters::new("watched"));
    let ledger = FaultyLedger::new(MemoryLedger::new());
    let mut policy = Policy::default();
    policy.retention.completed = Keep::younger_than(Duration::ZERO);
    let queue = Queue::builder(ledger.clone())
        .name("watched")
        .policy(policy)
        .counters(counters.clone())
        .build()
        .unwrap();
    assert!(Arc::ptr_eq(queue.counters(), &counters));
    let sub = queue.subscribe();
    queue.publish(entry("a")).await.unwrap();
    queue.publish(entry("a")).await.unwrap();
    sub.recv().await.unwrap().complete().await.unwrap();
    let c = counters.counts();
    assert_eq!(
        (c.offered, c.accepted, c.duplicates, c.completed, c.running),
        (2, 1, 1, 1, 0)
    );

    // A purge through the queue purges by the policy and counts like the queue's calls.
    assert_eq!(queue.purge().await.unwrap().completed, 1);
    assert_eq!(state(ledger.inner(), "a").await, None);
    ledger.fail_next(1);
    assert!(queue.purge().await.is_err());
    assert_eq!(counters.counts().ledger_errors, 1);
    assert!(
        counters.ledger_outage().is_some(),
        "a transient failure is an outage"
    );
    queue.purge().await.unwrap();
    assert!(counters.ledger_outage().is_none(), "a success ends it");
    assert!(counters.ledger_failure().is_none());

    // A failure retrying cannot fix is kept, and wakes whoever waits for one; a wait dropped
    // before it changes nothing.
    let dropped = tokio::time::timeout(Duration::from_millis(5), counters.ledger_failed()).await;
    assert!(dropped.is_err(), "no failure yet");
    let waiting = tokio::spawn({
        let counters = counters.clone();
        async move { counters.ledger_failed().await }
    });
    tokio::task::yield_now().await;
    ledger.break_with(Some(ErrorKind::Corrupt));
    assert_eq!(queue.purge().await.unwrap_err().kind(), ErrorKind::Corrupt);
    assert_eq!(waiting.await.unwrap().kind(), ErrorKind::Corrupt);
    assert_eq!(
        counters.ledger_failure().unwrap().kind(),
        ErrorKind::Corrupt
    );
    assert_eq!(counters.ledger_failed().await.kind(), ErrorKind::Corrupt);
}
