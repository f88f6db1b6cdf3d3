//! `qupid-peers`: one workload through qupid, apalis and a hand-written tokio pipeline, on
//! every storage, in one run; tables and a chart.
//!
//! ```text
//! cargo run --release --manifest-path peers/Cargo.toml -- [--entries N] [--runs R]
//!     [--memory-entries N] [--storage-entries N] [--limit SECS] [--retained K]
//!     [--only NAME,...] [--no-write]
//! ```
//!
//! The workload: N entries with 10% duplicate keys (entry `i` has key
//! `record/{i mod 0.9N:08}`), no-op work, concurrency 64. `--entries` sets N for every
//! configuration; by default N is 200,000 for the in-memory ones and the floor and 20,000 for
//! the storages (apalis on SQLite slows down with the size of its table: 20,000 take it about
//! a minute). The table of retained keys runs both ledgers at the in-memory size. Each configuration runs `--runs` times (3), each run in a child process (this
//! binary with `--child`), so the peak resident memory (VmHWM) is the configuration's own.
//! A run that does not finish within `--limit` seconds (120) fails; the configuration is then
//! tried at a tenth of the size, and so on, and the table shows the largest size it finished
//! and how the larger one failed.
//!
//! The results go to stdout, to `peers/results/<date>.md` and to
//! `peers/results/throughput.svg` (not with `--only` or `--no-write`).
//!
//! One configuration alone, for `perf record`:
//! `qupid-peers --child apalis-sqlite --entries 20000 --workers 64 --retained 0 --limit 120`
//! prints its outcome as one JSON line.

mod apalis_runs;
mod chart;
mod child;
mod floor;
mod qupid_runs;
mod report;
mod servers;
mod tally;

use std::fmt;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tally::Outcome;

/// Where a configuration keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// In the process.
    Memory,
    /// A SQLite file in the temp dir.
    Sqlite,
    /// The Redis server.
    Redis,
    /// The PostgreSQL server.
    Postgres,
}

/// What runs the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conf {
    /// The hand-written tokio pipeline.
    Floor,
    /// qupid's `Pipeline` on a ledger.
    Qupid(Store),
    /// apalis on a storage.
    Apalis(Store),
    /// apalis on Redis with `idempotency_ttl` set (its default, no expiry, drops nothing).
    ApalisRedisTtl,
}

/// Every storage, in table order.
const STORES: [Store; 4] = [Store::Memory, Store::Sqlite, Store::Redis, Store::Postgres];

impl Store {
    /// The storage's name in configuration names.
    fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Sqlite => "sqlite",
            Store::Redis => "redis",
            Store::Postgres => "postgres",
        }
    }
}

impl Conf {
    /// Every configuration, in table order: the floor, then qupid and apalis per storage.
    fn all() -> Vec<Conf> {
        let mut v = vec![Conf::Floor];
        for s in STORES {
            v.push(Conf::Qupid(s));
            v.push(Conf::Apalis(s));
            if s == Store::Redis {
                v.push(Conf::ApalisRedisTtl);
            }
        }
        v
    }

    /// The configuration named `s` (as `Display` writes it).
    fn parse(s: &str) -> Option<Conf> {
        Conf::all().into_iter().find(|c| c.to_string() == s)
    }

    /// Where it keeps its state (the floor: in memory).
    fn store(self) -> Store {
        match self {
            Conf::Floor => Store::Memory,
            Conf::Qupid(s) | Conf::Apalis(s) => s,
            Conf::ApalisRedisTtl => Store::Redis,
        }
    }

    /// The chart's and tables' longer label.
    fn label(self) -> String {
        match self {
            Conf::Floor => "floor: hand-written tokio".to_owned(),
            Conf::Qupid(s) => format!("qupid {}", s.name()),
            Conf::Apalis(s) => format!("apalis {}", s.name()),
            Conf::ApalisRedisTtl => "apalis redis, idempotency_ttl 1 day".to_owned(),
        }
    }
}

impl fmt::Display for Conf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conf::Floor => f.write_str("floor"),
            Conf::Qupid(s) => write!(f, "qupid-{}", s.name()),
            Conf::Apalis(s) => write!(f, "apalis-{}", s.name()),
            Conf::ApalisRedisTtl => f.write_str("apalis-redis-ttl"),
        }
    }
}

/// Worker counts of the scaling table.
const WORKERS: [usize; 4] = [1, 4, 16, 64];
/// The concurrency of the main table.
const CONCURRENCY: usize = 64;
/// Configurations of the scaling table.
const SCALING: [Conf; 4] = [
    Conf::Floor,
    Conf::Qupid(Store::Memory),
    Conf::Qupid(Store::Sqlite),
    Conf::Apalis(Store::Memory),
];
/// Ledgers of the retained-keys table.
const RETAINED: [Conf; 2] = [Conf::Qupid(Store::Memory), Conf::Qupid(Store::Sqlite)];

/// The command line.
#[derive(Debug, Clone)]
pub struct Args {
    /// N for the floor, the in-memory configurations and the retained-keys table.
    memory_entries: usize,
    /// N for SQLite, Redis and PostgreSQL.
    storage_entries: usize,
    /// Runs per configuration.
    runs: usize,
    /// The longest a run may take.
    limit: Duration,
    /// The largest number of retained keys.
    retained: usize,
    /// Only these configurations (all if empty).
    only: Vec<Conf>,
    /// Whether to write `results/`.
    write: bool,
    /// The arguments as given, for the report.
    given: Vec<String>,
}

/// Prints the usage and exits with status 2.
fn usage() -> ! {
    eprintln!(
        "usage: qupid-peers [--entries N] [--runs R] [--memory-entries N] [--storage-entries N] \
         [--limit SECS] [--retained K] [--only NAME,...] [--no-write]\n\
         names: {}",
        Conf::all()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::process::exit(2);
}

/// A flag's value as a number (`1_000` and `1,000` accepted), or the usage.
fn number(v: Option<String>) -> usize {
    v.and_then(|v| v.replace(['_', ','], "").parse().ok())
        .unwrap_or_else(|| usage())
}

/// The command line, parsed.
fn args() -> Args {
    let given: Vec<String> = std::env::args().skip(1).collect();
    let mut a = Args {
        memory_entries: 200_000,
        storage_entries: 20_000,
        runs: 3,
        limit: Duration::from_secs(120),
        retained: 1_000_000,
        only: Vec::new(),
        write: true,
        given: given.clone(),
    };
    let mut it = given.into_iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--entries" => {
                let n = number(it.next());
                (a.memory_entries, a.storage_entries) = (n, n);
            }
            "--memory-entries" => a.memory_entries = number(it.next()),
            "--storage-entries" => a.storage_entries = number(it.next()),
            "--runs" => a.runs = number(it.next()).max(1),
            "--limit" => a.limit = Duration::from_secs(number(it.next()) as u64),
            "--retained" => a.retained = number(it.next()),
            "--no-write" => a.write = false,
            "--only" => {
                for name in it.next().unwrap_or_else(|| usage()).split(',') {
                    a.only.push(Conf::parse(name).unwrap_or_else(|| usage()));
                }
            }
            _ => usage(),
        }
    }
    a
}

impl Args {
    /// N for `c`.
    fn size(&self, c: Conf) -> usize {
        if c.store() == Store::Memory {
            self.memory_entries
        } else {
            self.storage_entries
        }
    }

    /// Whether `c` runs at all.
    fn wanted(&self, c: Conf) -> bool {
        self.only.is_empty() || self.only.contains(&c)
    }
}

/// One child run: `conf` on `entries` entries with `workers` workers and `retained`
/// pre-completed keys. Fails if the child fails, or is killed for running past the limit
/// plus time for setup.
fn spawn_child(
    conf: Conf,
    entries: usize,
    workers: usize,
    retained: usize,
    limit: Duration,
) -> Result<Outcome, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let mut child = Command::new(exe)
        .args(["--child", &conf.to_string()])
        .args(["--entries", &entries.to_string()])
        .args(["--workers", &workers.to_string()])
        .args(["--retained", &retained.to_string()])
        .args(["--limit", &limit.as_secs().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start a child: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    // Setup (a million retained keys, migrations) is not in the limit; give it time.
    let backstop = limit + Duration::from_secs(300);
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > backstop => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "killed after {} s without an answer",
                    backstop.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for the child: {e}")),
        }
    };
    let out = reader.join().unwrap_or_default();
    let line = out.lines().rev().find(|l| l.starts_with('{'));
    match line {
        Some(l) => serde_json::from_str(l).map_err(|e| format!("bad child output {l:?}: {e}")),
        None => Err(format!("the child exited ({status}) without an outcome")),
    }
}

/// A configuration's runs at one setting.
#[derive(Debug, Clone)]
pub struct Row {
    /// What runs.
    conf: Conf,
    /// Its concurrency.
    workers: usize,
    /// Completed keys in the ledger before each run.
    retained: usize,
    /// The size the successful runs used (smaller than asked if the asked size failed).
    size: usize,
    /// The runs that finished, at `size`.
    outcomes: Vec<Outcome>,
    /// The first size that failed, and how.
    failure: Option<(usize, String)>,
    /// No size finished: stop trying.
    abandoned: bool,
}

impl Row {
    /// No runs yet.
    fn new(conf: Conf, size: usize, workers: usize, retained: usize) -> Row {
        Row {
            conf,
            workers,
            retained,
            size,
            outcomes: Vec::new(),
            failure: None,
            abandoned: false,
        }
    }

    /// One more run; on a failure, record it and step down in size until one finishes.
    fn run(&mut self, limit: Duration) {
        if self.abandoned {
            return;
        }
        let mut size = self.size;
        loop {
            let outcome = spawn_child(self.conf, size, self.workers, self.retained, limit)
                .and_then(|o| match &o.error {
                    None => Ok(o),
                    Some(e) => Err(e.clone()),
                });
            match outcome {
                Ok(o) => {
                    eprintln!(
                        "  {:<16} workers {:>2} retained {:>9}: {:>9} entries, {:>10.0} entries/s, \
                         {} keys >1x (max {}), peak RSS {} MiB",
                        self.conf.to_string(),
                        self.workers,
                        self.retained,
                        size,
                        o.rate(),
                        o.twice,
                        o.max,
                        o.rss_kib / 1024
                    );
                    if size != self.size {
                        // Earlier runs at the larger size (if any) do not compare; keep the new.
                        self.outcomes.clear();
                        self.size = size;
                    }
                    self.outcomes.push(o);
                    return;
                }
                Err(why) => {
                    eprintln!(
                        "  {:<16} workers {:>2} retained {:>9}: {size} entries FAILED: {why}",
                        self.conf.to_string(),
                        self.workers,
                        self.retained
                    );
                    self.failure.get_or_insert((size, why));
                    if !self.outcomes.is_empty() && size == self.size {
                        // It finished this size before: one failure in several runs. Keep it
                        // recorded, and go on at this size.
                        return;
                    }
                    size /= 10;
                    if size < 1_000 {
                        self.abandoned = true;
                        return;
                    }
                }
            }
        }
    }

    /// The median, min and max rate of the finished runs.
    fn rates(&self) -> Option<(f64, f64, f64)> {
        let mut r: Vec<f64> = self.outcomes.iter().map(Outcome::rate).collect();
        if r.is_empty() {
            return None;
        }
        r.sort_by(f64::total_cmp);
        Some((r[r.len() / 2], r[0], r[r.len() - 1]))
    }
}

/// The retained-keys table's columns: none, 10,000 and `--retained`.
fn retained_sizes(a: &Args) -> [usize; 3] {
    [0, 10_000, a.retained]
}

fn main() {
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some("--child") {
        child::main(&raw[2..]);
    }
    let a = args();
    let header = report::Header::collect(&a);
    eprintln!("{}", header.lines().join("\n"));
    eprintln!();

    // The main table: every configuration at concurrency 64, run after run in turn, so slow
    // drifts of the machine spread over all of them.
    let mut main_rows: Vec<Row> = Conf::all()
        .into_iter()
        .filter(|c| a.wanted(*c))
        .map(|c| Row::new(c, a.size(c), CONCURRENCY, 0))
        .collect();
    for run in 0..a.runs {
        eprintln!("main table, run {} of {}", run + 1, a.runs);
        for row in &mut main_rows {
            row.run(a.limit);
        }
    }

    // Throughput as workers grow; the 64-worker column is the main table's.
    let mut scaling: Vec<Row> = Vec::new();
    for conf in SCALING.into_iter().filter(|c| a.wanted(*c)) {
        for w in WORKERS.into_iter().filter(|w| *w != CONCURRENCY) {
            scaling.push(Row::new(conf, a.size(conf), w, 0));
        }
    }
    for run in 0..a.runs {
        eprintln!("workers table, run {} of {}", run + 1, a.runs);
        for row in &mut scaling {
            row.run(a.limit);
        }
    }

    // Throughput with retained completed keys in the ledger.
    // Every ledger at the in-memory size here (the runs are short, and at 20,000 entries a
    // storage's run is over in a tenth of a second, which measures the cold start more than
    // the lookups), and K = 0 measured the same way.
    let mut retained: Vec<Row> = Vec::new();
    for conf in RETAINED.into_iter().filter(|c| a.wanted(*c)) {
        for k in retained_sizes(&a) {
            retained.push(Row::new(conf, a.memory_entries, CONCURRENCY, k));
        }
    }
    for run in 0..a.runs {
        eprintln!("retained-keys table, run {} of {}", run + 1, a.runs);
        for row in &mut retained {
            row.run(a.limit);
        }
    }

    let text = report::markdown(&header, &a, &main_rows, &scaling, &retained);
    println!("{text}");
    if a.write && a.only.is_empty() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("cannot create {}: {e}", dir.display());
            return;
        }
        let md = dir.join(format!("{}.md", header.day));
        let svg = dir.join("throughput.svg");
        match std::fs::write(&md, &text) {
            Ok(()) => eprintln!("wrote {}", md.display()),
            Err(e) => eprintln!("cannot write {}: {e}", md.display()),
        }
        match chart::draw(&svg, &main_rows, &header) {
            Ok(()) => eprintln!("wrote {}", svg.display()),
            Err(e) => eprintln!("cannot draw {}: {e}", svg.display()),
        }
    }
}
