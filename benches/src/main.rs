//! `qupid-bench`: qupid's pipeline against a hand-written tokio pipeline doing the same
//! de-duplication, in one run, plus the memory ledger's raw speed and footprint.
//!
//! ```text
//! cargo run --release -p qupid-benches --bin qupid-bench [-- --entries N --runs R]
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qupid::ledger::{Claim, Ledger, Offered};
use qupid::{Entry, MemoryLedger, Offer, Pipeline, Policy, Source};

const CONCURRENCY: usize = 64;

struct Args {
    entries: usize,
    runs: usize,
    keys: usize,
    /// Only this pipeline (`qupid` or `hand`), for profiling.
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        entries: 200_000,
        runs: 5,
        keys: 1_000_000,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let raw = it.next();
        let value = raw.as_deref().and_then(|v| v.parse().ok());
        match (flag.as_str(), value) {
            ("--entries", Some(v)) => a.entries = v,
            ("--runs", Some(v)) => a.runs = v,
            ("--keys", Some(v)) => a.keys = v,
            ("--only", _) if raw.is_some() => a.only = raw,
            _ => {
                eprintln!(
                    "usage: qupid-bench [--entries N] [--runs R] [--keys K] [--only qupid|hand]"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

/// `n` entries with 10% duplicate keys: entry `i` has key `i mod 0.9n`.
fn workload(n: usize) -> Vec<(String, u64)> {
    let unique = n * 9 / 10;
    (0..n)
        .map(|i| (format!("record/{:08}", i % unique), i as u64))
        .collect()
}

async fn qupid_pipeline(work: Vec<(String, u64)>) -> (Duration, u64) {
    let entries: Vec<Entry<u64>> = work
        .into_iter()
        .map(|(k, v)| Entry::new(k, v).expect("valid key"))
        .collect();
    let start = Instant::now();
    let report = Pipeline::builder(MemoryLedger::new())
        .source(Source::stream(futures::stream::iter(entries)))
        .process(|a| {
            let v = *a.payload();
            async move { Ok::<_, std::convert::Infallible>(v) }
        })
        .save(|_, _| async { Ok::<_, std::convert::Infallible>(()) })
        .concurrency(CONCURRENCY)
        .build()
        .expect("pipeline")
        .run()
        .await
        .expect("run");
    (start.elapsed(), report.completed)
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

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
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
                    Offered::Duplicate(_) => None,
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

fn main() {
    let a = args();
    if let Some(only) = &a.only {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for _ in 0..a.runs {
            let (d, _) = if only == "hand" {
                rt.block_on(hand_written(workload(a.entries)))
            } else {
                rt.block_on(qupid_pipeline(workload(a.entries)))
            };
            println!(
                "{only}: {:.0} entries/s",
                a.entries as f64 / d.as_secs_f64()
            );
        }
        return;
    }
    // Memory footprint first, while the heap is fresh.
    let (per_key, key_len) = bytes_per_key(a.keys);
    let (fresh, dup) = offers_per_sec(a.keys);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let unique = (a.entries * 9 / 10) as u64;
    let (mut q, mut h) = (Vec::new(), Vec::new());
    for _ in 0..a.runs {
        // Alternate, so neither side always runs on a warmer machine.
        let (d, n) = rt.block_on(hand_written(workload(a.entries)));
        assert_eq!(n, unique, "hand-written processed each unique key once");
        h.push(a.entries as f64 / d.as_secs_f64());
        let (d, n) = rt.block_on(qupid_pipeline(workload(a.entries)));
        assert_eq!(n, unique, "qupid processed each unique key once");
        q.push(a.entries as f64 / d.as_secs_f64());
    }
    let (qm, qmin, qmax) = median(q);
    let (hm, hmin, hmax) = median(h);
    println!(
        "pipeline: {} entries ({} unique keys, 10% duplicates), no-op work, concurrency {CONCURRENCY}, {} runs, median (min–max)",
        a.entries, unique, a.runs
    );
    println!();
    println!("| pipeline | entries/s | min–max | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| hand-written (async-channel + Mutex<HashMap>) | {hm:.0} | {hmin:.0}–{hmax:.0} | 1.00 |"
    );
    println!(
        "| qupid `Pipeline` + `MemoryLedger` | {qm:.0} | {qmin:.0}–{qmax:.0} | {:.2} |",
        qm / hm
    );
    println!();
    println!("| memory ledger, one core | value |");
    println!("|---|---:|");
    println!("| offers/s, new keys (batches of 256) | {fresh:.0} |");
    println!("| offers/s, duplicates (batches of 256) | {dup:.0} |");
    println!(
        "| resident bytes per retained completed key at {} keys ({key_len}-byte keys) | {per_key:.0} ({:.0} + key length) |",
        a.keys,
        per_key - key_len as f64
    );
}
