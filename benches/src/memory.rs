//! The memory section: qupid's pipeline over a [`MemoryLedger`] against a hand-written tokio
//! pipeline doing the same de-duplication, plus the memory ledger's raw speed and footprint.

use qupid::LedgerAdmin;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qupid::ledger::{Claim, Ledger, Offered};
use qupid::{Entry, MemoryLedger, Offer, Policy};

use crate::workload::{
    per_sec, qupid_pipeline, runtime, unique, workload, Rate, Side, CONCURRENCY,
};

/// What the memory section measured.
#[derive(Debug)]
pub(crate) struct Memory {
    pub(crate) entries: usize,
    pub(crate) runs: usize,
    pub(crate) hand: Rate,
    pub(crate) qupid: Rate,
    /// Offers per second of the ledger alone: new keys, then duplicates.
    pub(crate) fresh: f64,
    pub(crate) dup: f64,
    /// Retained keys measured, resident bytes per key, and the key length.
    pub(crate) keys: usize,
    pub(crate) per_key: f64,
    pub(crate) key_len: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Mark {
    Queued,
    Completed,
}

/// What one would write by hand: a bounded channel, a `Mutex<HashMap>` of key states for the
/// de-dup, and `CONCURRENCY` worker tasks.
async fn hand_written(work: Vec<(String, u64)>) -> (Duration, u64) {
    let start = Instant::now();
    let seen: Arc<Mutex<HashMap<String, Mark>>> = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let (tx, rx) = async_channel::bounded::<(String, u64)>(CONCURRENCY * 4);
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (rx, seen, done) = (rx.clone(), seen.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            while let Ok((key, v)) = rx.recv().await {
                std::hint::black_box(v); // the no-op work and save
                if let Some(m) = seen.lock().expect("lock").get_mut(&key) {
                    *m = Mark::Completed;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for (key, v) in work {
        let fresh = {
            let mut s = seen.lock().expect("lock");
            if s.contains_key(&key) {
                false
            } else {
                s.insert(key.clone(), Mark::Queued);
                true
            }
        };
        if fresh {
            tx.send((key, v)).await.expect("send");
        }
    }
    drop(tx);
    for w in workers {
        w.await.expect("worker");
    }
    let completed = seen
        .lock()
        .expect("lock")
        .values()
        .filter(|m| **m == Mark::Completed)
        .count();
    assert_eq!(completed as u64, done.load(Ordering::Relaxed));
    (start.elapsed(), done.load(Ordering::Relaxed))
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Offers per second of the memory ledger on one core: fresh keys, then all duplicates.
fn offers_per_sec(n: usize) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ledger = MemoryLedger::new();
        let policy = Policy::default();
        let offers: Vec<Offer> = (0..n)
            .map(|i| {
                Entry::new(format!("record/{i:08}"), ())
                    .expect("valid")
                    .offer()
            })
            .collect();
        let start = Instant::now();
        for chunk in offers.chunks(256) {
            std::hint::black_box(ledger.offer(&policy, chunk).await.expect("offer"));
        }
        let fresh = n as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        for chunk in offers.chunks(256) {
            std::hint::black_box(ledger.offer(&policy, chunk).await.expect("offer"));
        }
        (fresh, n as f64 / start.elapsed().as_secs_f64())
    })
}

/// Resident bytes per completed key retained by the memory ledger, at `n` keys.
fn bytes_per_key(n: usize) -> (f64, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let policy = Policy::default();
        let key_len = format!("record/{:08}", 0).len();
        let before = rss_bytes();
        let ledger = MemoryLedger::new();
        let mut batch = Vec::with_capacity(1024);
        for start in (0..n).step_by(1024) {
            batch.clear();
            batch
                .extend((start..(start + 1024).min(n)).map(|i| {
                    Offer::new(qupid::Key::new(format!("record/{i:08}")).expect("valid"))
                }));
            let out = ledger.offer(&policy, &batch).await.expect("offer");
            let claims: Vec<Claim> = batch
                .iter()
                .zip(out)
                .filter_map(|(o, r)| match r {
                    Offered::Accepted(l) => Some(Claim {
                        key: o.key.clone(),
                        token: l.token,
                    }),
                    _ => None,
                })
                .collect();
            ledger.start(&policy, &claims).await.expect("start");
            ledger.complete(&claims).await.expect("complete");
        }
        drop(batch);
        let after = rss_bytes();
        assert_eq!(ledger.stats().await.expect("stats").completed, n as u64);
        let per_key = (after.saturating_sub(before)) as f64 / n as f64;
        std::hint::black_box(&ledger);
        (per_key, key_len)
    })
}

/// The whole memory section: footprint, raw offers, then `runs` runs of each pipeline.
pub(crate) fn run(entries: usize, runs: usize, keys: usize) -> Memory {
    // Memory footprint first, while the heap is fresh.
    let (per_key, key_len) = bytes_per_key(keys);
    let (fresh, dup) = offers_per_sec(keys);

    let rt = runtime();
    let unique = unique(entries) as u64;
    let (mut q, mut h) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        // Alternate, so neither side always runs on a warmer machine.
        let (d, n) = rt.block_on(hand_written(workload(entries)));
        assert_eq!(n, unique, "hand-written processed each unique key once");
        h.push(per_sec(entries, d));
        let d = rt.block_on(qupid_pipeline(MemoryLedger::new(), entries));
        q.push(per_sec(entries, d));
    }
    Memory {
        entries,
        runs,
        hand: Rate::of(h),
        qupid: Rate::of(q),
        fresh,
        dup,
        keys,
        per_key,
        key_len,
    }
}

/// One pipeline alone, `runs` times, each rate printed as it comes: for `perf record`.
pub(crate) fn profile(side: Side, entries: usize, runs: usize) {
    let rt = runtime();
    for _ in 0..runs {
        let (name, d) = if side == Side::Raw {
            ("hand", rt.block_on(hand_written(workload(entries))).0)
        } else {
            let d = rt.block_on(qupid_pipeline(MemoryLedger::new(), entries));
            ("qupid", d)
        };
        println!("{name}: {:.0} entries/s", per_sec(entries, d));
    }
}
