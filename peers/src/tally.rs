//! The workload, and the count of how many times each key was processed.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `n` entries with 10% duplicate keys: entry `i` has key `record/{i mod 0.9n:08}` and
/// payload `i`.
pub fn workload(n: usize) -> Vec<(String, u64)> {
    let unique = unique(n);
    (0..n)
        .map(|i| (format!("record/{:08}", i % unique), i as u64))
        .collect()
}

/// How many distinct keys `workload(n)` holds: what a de-duplicating pipeline processes,
/// once each.
pub fn unique(n: usize) -> usize {
    (n * 9 / 10).max(1)
}

/// How many times each key was processed, shared by every worker of a run.
///
/// Every handler (qupid's `process`, apalis's job function, the floor's worker) calls
/// [`Tally::hit`] with the entry's payload `i`; the key is `i mod unique`, so the count is an
/// array of atomics indexed by key rather than a locked map: the counting costs every
/// configuration the same few nanoseconds and adds no contention of its own.
#[derive(Debug)]
pub struct Tally {
    /// Times each key was processed, by key index.
    counts: Vec<AtomicU32>,
    /// Handler calls, duplicates included.
    processed: AtomicU64,
    /// Keys processed at least once.
    distinct: AtomicUsize,
    /// When the last handler call ended, in nanoseconds since `start`.
    last: AtomicU64,
    /// When the clock started: when the tally was made.
    start: Instant,
}

impl Tally {
    /// A tally for `workload(entries)`, its clock starting now.
    pub fn new(entries: usize) -> Tally {
        Tally {
            counts: (0..unique(entries)).map(|_| AtomicU32::new(0)).collect(),
            processed: AtomicU64::new(0),
            distinct: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    /// The entry with payload `i` was processed once more.
    pub fn hit(&self, i: u64) {
        let key = (i % self.counts.len() as u64) as usize;
        if self.counts[key].fetch_add(1, Ordering::Relaxed) == 0 {
            self.distinct.fetch_add(1, Ordering::Relaxed);
        }
        self.processed.fetch_add(1, Ordering::Relaxed);
        let now = self.start.elapsed().as_nanos() as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    /// Handler calls so far.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// Whether every key has been processed at least once.
    pub fn all_seen(&self) -> bool {
        self.distinct.load(Ordering::Relaxed) == self.counts.len()
    }

    /// Keys processed at least once, and keys in all.
    pub fn seen(&self) -> (usize, usize) {
        (self.distinct.load(Ordering::Relaxed), self.counts.len())
    }

    /// Time from the start to the end of the last handler call.
    pub fn until_last(&self) -> Duration {
        Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The run's outcome, `elapsed` being the time it took.
    pub fn outcome(&self, entries: usize, elapsed: Duration, error: Option<String>) -> Outcome {
        let mut twice = 0;
        let mut max = 0;
        let mut missing = 0;
        for c in &self.counts {
            let c = c.load(Ordering::Relaxed);
            twice += u64::from(c > 1);
            missing += u64::from(c == 0);
            max = max.max(c);
        }
        let error = error.or_else(|| {
            (missing > 0)
                .then(|| format!("{missing} of {} keys never processed", self.counts.len()))
        });
        Outcome {
            entries,
            secs: elapsed.as_secs_f64(),
            processed: self.processed(),
            twice,
            max,
            missing,
            rss_kib: peak_rss_kib(),
            error,
        }
    }
}

/// What a child process reports about its one run, as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Entries offered.
    pub entries: usize,
    /// Seconds the run took (see the README for where each configuration's clock stops).
    pub secs: f64,
    /// Handler calls, duplicates included.
    pub processed: u64,
    /// Keys processed more than once.
    pub twice: u64,
    /// The most times one key was processed.
    pub max: u32,
    /// Keys never processed.
    pub missing: u64,
    /// Peak resident memory of the process (VmHWM), KiB.
    pub rss_kib: u64,
    /// Why the run failed (timed out, an error, keys lost), if it did.
    pub error: Option<String>,
}

impl Outcome {
    /// Entries per second.
    pub fn rate(&self) -> f64 {
        self.entries as f64 / self.secs
    }
}

/// VmHWM from `/proc/self/status`: the process's peak resident memory, KiB (0 if unknown).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
