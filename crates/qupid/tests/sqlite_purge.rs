//! Purging the SQLite ledger in chunks of 1,000 rows, each its own job on the writer thread:
//! a purge of many chunks removes what the memory ledger removes, and writes sent while it
//! runs are answered between its chunks instead of after it.
#![cfg(feature = "sqlite")]

use std::sync::Mutex;
use std::time::Duration;

use qupid::clock::ManualClock;
use qupid::ledger::{Claim, Failure, ListQuery, Offered, Purged, SqliteLedger, State};
use qupid::{Keep, Key, Ledger, LedgerAdmin, MemoryLedger, Offer, Policy, Retention};
use tempfile::TempDir;

/// Rows the SQLite ledger deletes per writer job.
const CHUNK: usize = 1_000;

async fn sqlite(clock: &ManualClock) -> (SqliteLedger, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ledger = SqliteLedger::builder(dir.path().join("ledger.db"))
        .clock(clock.clone())
        .open()
        .await
        .expect("a fresh ledger file opens");
    (ledger, dir)
}

fn policy() -> Policy {
    let mut p = Policy::default();
    p.max_attempts = 1;
    p
}

/// Offers and starts `keys` in one batch: their claims.
async fn run_all<L: Ledger>(l: &L, keys: &[String]) -> Vec<Claim> {
    let offers: Vec<Offer> = keys
        .iter()
        .map(|k| Offer::new(Key::new(k.as_str()).expect("valid key")))
        .collect();
    l.offer_and_start(&policy(), &offers)
        .await
        .expect("offer and start")
        .into_iter()
        .zip(&offers)
        .map(|(o, offer)| match o {
            Offered::Accepted(lease) => Claim {
                key: offer.key.clone(),
                token: lease.token,
            },
            other => panic!("{:?} should be accepted, was {other:?}", offer.key),
        })
        .collect()
}

/// Completes `keys` in one batch.
async fn complete_all<L: Ledger>(l: &L, keys: &[String]) {
    let claims = run_all(l, keys).await;
    let done = l.complete(&claims).await.expect("complete");
    assert!(done.iter().all(Result::is_ok), "all complete");
}

/// Fails `keys` for good (one attempt allowed) in one batch.
async fn kill_all<L: Ledger>(l: &L, keys: &[String]) {
    let failures: Vec<Failure> = run_all(l, keys)
        .await
        .into_iter()
        .map(|claim| Failure {
            claim,
            error: "boom".to_owned(),
        })
        .collect();
    let failed = l.fail(&policy(), &failures).await.expect("fail");
    assert!(failed.iter().all(Result::is_ok), "all fail");
}

fn names(prefix: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("{prefix}{i:06}"))
        .collect()
}

/// `n` keys for the rows finished at `second` of six: interleaved with the other seconds'
/// keys, so that key order is not time order.
fn spread(prefix: &str, second: usize, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{:06}", i * 6 + (5 - second)))
        .collect()
}

/// Every key of `state`, in key order.
async fn keys_of<L: LedgerAdmin>(l: &L, state: State) -> Vec<String> {
    let mut out = Vec::new();
    let mut q = ListQuery::new(state).limit(10_000);
    loop {
        let page = l.list(&q).await.expect("list");
        out.extend(page.records.iter().map(|r| r.key.as_str().to_owned()));
        match page.next {
            Some(next) => q = q.after(next),
            None => return out,
        }
    }
}

/// Purges `l` by `retention`: what it removed, and the Completed and Dead rows left.
async fn purge<L: LedgerAdmin>(l: &L, retention: Retention) -> (Purged, u64, u64) {
    let purged = l.purge(&retention).await.expect("purge");
    let stats = l.stats().await.expect("stats");
    (purged, stats.completed, stats.dead)
}

/// Fills `l` with rows finished over six seconds, thousands at each second (so the cuts by
/// count fall among rows finished at the same time, and are decided by key), then purges by
/// age, by count, then by both, most steps removing more than one chunk.
async fn purges<L: LedgerAdmin>(l: &L, clock: &ManualClock) -> Vec<(Purged, u64, u64)> {
    for second in 0..6 {
        for batch in spread("c", second, 2001).chunks(1000) {
            complete_all(l, batch).await;
        }
        kill_all(l, &spread("d", second, 1200)).await;
        clock.advance(Duration::from_secs(1));
    }
    // Now is 6 s; the rows finished at 0, 1, …, 5 s.
    let by_age = Retention {
        completed: Keep::younger_than(Duration::from_millis(3_500)),
        dead: Keep::younger_than(Duration::from_secs(3)),
    };
    let by_count = Retention {
        completed: Keep::newest(500),
        dead: Keep::newest(1000),
    };
    let both = Retention {
        completed: Keep {
            max_age: Some(Duration::from_millis(1_500)),
            max_count: Some(10),
        },
        dead: Keep {
            max_age: Some(Duration::ZERO),
            max_count: Some(10),
        },
    };
    vec![
        purge(l, by_age).await,
        purge(l, by_count).await,
        purge(l, both).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_of_many_chunks_removes_what_the_memory_ledger_removes() {
    let clock = ManualClock::new();
    let (l, _dir) = sqlite(&clock).await;
    let on_sqlite = purges(&l, &clock).await;
    let memory_clock = ManualClock::new();
    let memory = MemoryLedger::with_clock(memory_clock.clone());
    let on_memory = purges(&memory, &memory_clock).await;
    assert_eq!(on_sqlite, on_memory, "the same purges as the memory ledger");
    let purged = |completed, dead| Purged { completed, dead };
    assert_eq!(
        on_sqlite,
        [
            // The rows of 0, 1 and 2 s (at or before 2.5 s); the Dead ones of 0 to 3 s.
            (purged(3 * 2001, 4 * 1200), 3 * 2001, 2 * 1200),
            // All but the greatest keys of the rows of 5 s.
            (purged(3 * 2001 - 500, 2 * 1200 - 1000), 500, 1000),
            // Nothing is older than 1.5 s but the newest ten are kept; a zero age takes
            // every Dead row.
            (purged(490, 1000), 10, 0),
        ]
    );
    for state in [State::Completed, State::Dead] {
        assert_eq!(
            keys_of(&l, state).await,
            keys_of(&memory, state).await,
            "the same {state:?} keys are left"
        );
    }
}

/// Keeping the newest rows cuts among rows finished at the same time by key, in chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_by_count_cuts_ties_by_key() {
    let clock = ManualClock::new();
    let (l, _dir) = sqlite(&clock).await;
    let keys = names("k", 0, 2 * CHUNK + 7);
    for batch in keys.chunks(1000) {
        complete_all(&l, batch).await;
    }
    let retention = Retention {
        completed: Keep::newest(3),
        dead: Keep::FOREVER,
    };
    let purged = l.purge(&retention).await.expect("purge");
    assert_eq!(purged.completed as usize, 2 * CHUNK + 4);
    assert_eq!(
        keys_of(&l, State::Completed).await,
        keys[keys.len() - 3..],
        "the greatest keys are the newest of a tie"
    );
    assert_eq!(l.purge(&retention).await.expect("purge"), Purged::default());
}

/// An offer and a completion sent while a purge of ten chunks runs are answered before the
/// purge is: each chunk is one job on the writer thread, and the writes sent meanwhile are
/// queued before the next chunk. (A purge in one job is answered first.) The order is that
/// of the writer's queue, so no timing is involved.
#[tokio::test]
async fn writes_sent_during_a_purge_are_answered_between_its_chunks() {
    let clock = ManualClock::new();
    let (l, _dir) = sqlite(&clock).await;
    let keys = names("old", 0, 10 * CHUNK);
    for batch in keys.chunks(5000) {
        complete_all(&l, batch).await;
    }
    clock.advance(Duration::from_secs(10));
    let retention = Retention {
        completed: Keep::younger_than(Duration::from_secs(5)),
        dead: Keep::FOREVER,
    };
    let order = Mutex::new(Vec::new());
    let purge = async {
        let purged = l.purge(&retention).await.expect("purge");
        order.lock().expect("order").push("purge");
        purged
    };
    let work = async {
        complete_all(&l, &["new".to_owned()]).await;
        order.lock().expect("order").push("offer and complete");
    };
    let (purged, ()) = tokio::join!(purge, work);
    assert_eq!(
        *order.lock().expect("order"),
        ["offer and complete", "purge"],
        "the offer and its completion were answered before the purge"
    );
    assert_eq!(purged.completed as usize, keys.len(), "every old row");
    assert_eq!(
        keys_of(&l, State::Completed).await,
        ["new"],
        "the new key finished after the cutoff"
    );
}
