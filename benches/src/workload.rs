//! The one workload every section runs, the qupid pipeline that runs it over any ledger, and
//! the bookkeeping shared by the sections (rates, fresh namespaces).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use qupid::{Entry, LedgerAdmin, Pipeline, Source};

/// Attempts at once in every qupid pipeline (and workers in the hand-written one).
pub(crate) const CONCURRENCY: usize = 64;

/// `n` entries with 10% duplicate keys: entry `i` has key `record/{i mod 0.9n:08}`.
pub(crate) fn workload(n: usize) -> Vec<(String, u64)> {
    let unique = unique(n);
    (0..n)
        .map(|i| (format!("record/{:08}", i % unique), i as u64))
        .collect()
}

/// How many distinct keys `workload(n)` holds: what every pipeline must process, once each.
pub(crate) fn unique(n: usize) -> usize {
    (n * 9 / 10).max(1)
}

/// Runs `workload(n)` through a qupid pipeline over `ledger`: a `Source::stream` of the
/// entries, no-op process and save, [`CONCURRENCY`] at a time. Answers the time from building
/// the pipeline to the end of the run (the ledger is already open), after checking that each
/// unique key was completed exactly once.
pub(crate) async fn qupid_pipeline<L: LedgerAdmin>(ledger: L, n: usize) -> Duration {
    qupid_pipeline_under(ledger, n, "record").await
}

/// [`qupid_pipeline`] with the workload's keys under `{tag}/` instead of `record/`, so that
/// several runs over one ledger each process keys of their own.
pub(crate) async fn qupid_pipeline_under<L: LedgerAdmin>(
    ledger: L,
    n: usize,
    tag: &str,
) -> Duration {
    let entries: Vec<Entry<u64>> = workload(n)
        .into_iter()
        .map(|(k, v)| {
            let k = k.replacen("record", tag, 1);
            Entry::new(k, v).expect("valid key")
        })
        .collect();
    let start = Instant::now();
    let report = Pipeline::builder(ledger)
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
    let elapsed = start.elapsed();
    assert_eq!(
        report.completed,
        unique(n) as u64,
        "qupid completed each unique key once: {report:?}"
    );
    elapsed
}

/// Entries per second of `n` entries done in `d`.
pub(crate) fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// The median and the range of several runs' rates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Rate {
    pub(crate) fn of(mut runs: Vec<f64>) -> Rate {
        assert!(!runs.is_empty(), "at least one run");
        runs.sort_by(|a, b| a.total_cmp(b));
        Rate {
            median: runs[runs.len() / 2],
            min: runs[0],
            max: runs[runs.len() - 1],
        }
    }
}

/// A name no other run of this process (or, with the pid, of another process) has used:
/// `<tag>_<pid>_<n>`, lowercase ASCII, digits and `_`, so it suits a qupid namespace, a
/// PostgreSQL schema and a Redis key prefix alike.
pub(crate) fn fresh_name(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{tag}_{}_{n}", std::process::id())
}

/// What a section compares: raw loops, each with the ratio qupid should reach against it, and
/// qupid's pipeline.
#[derive(Debug)]
pub(crate) struct Comparison {
    /// The ledger (`sqlite`, `redis`, `postgres`).
    pub(crate) ledger: &'static str,
    /// Lines describing the server or file and the settings, printed above the table.
    pub(crate) setup: Vec<String>,
    pub(crate) entries: usize,
    pub(crate) runs: usize,
    /// The raw loops, in the order printed.
    pub(crate) baselines: Vec<Baseline>,
    /// qupid's pipeline: its label and rate, if it ran.
    pub(crate) qupid: Option<(String, Rate)>,
}

/// One raw loop's result and the project's target for qupid against it.
#[derive(Debug)]
pub(crate) struct Baseline {
    /// `(a)` or `(b)`: how the summary refers to it.
    pub(crate) tag: &'static str,
    pub(crate) label: String,
    pub(crate) rate: Rate,
    /// qupid's median over this one's median should be at least this (`None`: a loop shown
    /// for comparison only).
    pub(crate) target: Option<f64>,
}

/// Which side of a comparison to run: both (the benchmark), or one alone (for profiling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Both,
    Qupid,
    Raw,
}

impl Side {
    pub(crate) fn qupid(self) -> bool {
        self != Side::Raw
    }
    pub(crate) fn raw(self) -> bool {
        self != Side::Qupid
    }
}

/// Collects the runs of several configurations, one `Vec` of rates per configuration.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    by_config: Vec<Vec<f64>>,
}

impl Runs {
    pub(crate) fn new(configs: usize) -> Runs {
        Runs {
            by_config: vec![Vec::new(); configs],
        }
    }
    pub(crate) fn push(&mut self, config: usize, n: usize, d: Duration) {
        self.by_config[config].push(per_sec(n, d));
    }
    /// The rate of `config`, if it ran at least once.
    pub(crate) fn rate(&self, config: usize) -> Option<Rate> {
        let runs = &self.by_config[config];
        (!runs.is_empty()).then(|| Rate::of(runs.clone()))
    }
    /// The baselines that ran: configuration `i` is `labels[i]`, a `(tag, label, target)`.
    pub(crate) fn baselines(&self, labels: &[(&'static str, &str, Option<f64>)]) -> Vec<Baseline> {
        labels
            .iter()
            .enumerate()
            .filter_map(|(i, &(tag, label, target))| {
                self.rate(i).map(|rate| Baseline {
                    tag,
                    label: format!("{tag} {label}"),
                    rate,
                    target,
                })
            })
            .collect()
    }
}

/// The multi-threaded runtime every pipeline runs on (one worker per core).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
