//! `qupid-bench`: one workload, in one run, through qupid's pipeline over every ledger and
//! through the least one would write by hand for the same semantics:
//!
//! - memory: a hand-written tokio pipeline (channel + `Mutex<HashMap>`), plus the memory
//!   ledger's raw speed and footprint;
//! - sqlite, redis, postgres: a raw driver loop over the same store, unbatched (a) and
//!   batched (b), with the ratios qupid should reach against each; sqlite-full, the SQLite
//!   comparison with every commit synced to disk on both sides;
//! - latency: p50, p99 and the worst of an entry's time from the source to its saved output,
//!   per ledger, at a trickle of 100 entries a second and under load;
//! - retained: the pipeline's rate per ledger with 0 and 1,000,000 completed keys already in
//!   it (`--retained 0,1000000,10000000` for other levels), and bytes per retained key;
//! - purge: the wall time of purging 1,000,000 completed keys by age (`--entries N` for
//!   another number), per ledger, and the latency of a trickle of offers and completions
//!   beside it against the same trickle with no purge;
//! - shards: the pipeline over a Redis namespace split into 1, 4 and 16 shards, on the one
//!   server and (`QUPID_REDIS_CLUSTER=redis://host:port,...`) on a Redis Cluster.
//!
//! ```text
//! cargo run --release -p qupid-benches --bin qupid-bench -- \
//!     [--entries N] [--runs R] [--keys K] [--only memory|sqlite|sqlite-full|redis|postgres|latency|retained|purge|shards ...] [--retained N,N,...] \
//!     [--profile qupid|hand]
//! ```
//!
//! `--profile` runs one side alone (`qupid`, or `hand`/`raw` for the hand-written pipeline
//! and the raw loops) of the selected sections and prints each run's rate, for `perf record`.
//! `--only qupid|hand`, its old spelling, still works. A server that cannot be reached skips
//! its section with a line saying why. `QUPID_REDIS_URL` and `QUPID_POSTGRES_URL` choose the
//! servers (defaults: `redis://127.0.0.1:6379/`, `postgres://postgres@127.0.0.1:5432/test`).

mod latency;
mod memory;
mod postgres;
mod purge;
mod redis;
mod retained;
mod shards;
mod sqlite;
mod workload;

use std::process::Command;

use workload::{unique, Comparison, Side, CONCURRENCY};

const SECTIONS: [&str; 9] = [
    "memory",
    "sqlite",
    "sqlite-full",
    "redis",
    "postgres",
    "latency",
    "retained",
    "purge",
    "shards",
];

struct Args {
    /// Entries per run; `None` for each section's default.
    entries: Option<usize>,
    /// Runs per configuration; `None` for each section's default.
    runs: Option<usize>,
    /// Keys for the memory ledger's footprint and offer rates.
    keys: usize,
    /// The sections to run, in the order of [`SECTIONS`].
    only: Vec<&'static str>,
    /// One side alone, for profiling.
    profile: Side,
    /// Levels of retained keys for the `retained` section.
    retained: Vec<usize>,
}

fn usage() -> ! {
    eprintln!(
        "usage: qupid-bench [--entries N] [--runs R] [--keys K] \
         [--only memory|sqlite|sqlite-full|redis|postgres|latency|retained|purge|shards ...] [--retained N,N,...] [--profile qupid|hand]"
    );
    std::process::exit(2);
}

fn number(value: Option<String>) -> usize {
    value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| usage())
}

fn side(value: &str) -> Side {
    match value {
        "qupid" => Side::Qupid,
        "hand" | "raw" => Side::Raw,
        _ => usage(),
    }
}

fn args() -> Args {
    let mut a = Args {
        entries: None,
        runs: None,
        keys: 1_000_000,
        only: Vec::new(),
        profile: Side::Both,
        retained: vec![0, 1_000_000],
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--entries" => a.entries = Some(number(it.next())),
            "--runs" => a.runs = Some(number(it.next())),
            "--keys" => a.keys = number(it.next()),
            "--retained" => {
                a.retained = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|v| v.parse().unwrap_or_else(|_| usage()))
                    .collect();
            }
            "--profile" => a.profile = side(&it.next().unwrap_or_default()),
            "--only" => {
                let mut any = false;
                while let Some(v) = it.next_if(|v| !v.starts_with("--")) {
                    any = true;
                    for v in v.split(',').filter(|v| !v.is_empty()) {
                        if v == "qupid" || v == "hand" {
                            // The old spelling of --profile: the memory pipelines alone.
                            eprintln!("note: `--only {v}` is now `--profile {v}`");
                            a.profile = side(v);
                        } else if let Some(s) = SECTIONS.iter().find(|s| **s == v) {
                            a.only.push(s);
                        } else {
                            usage();
                        }
                    }
                }
                if !any {
                    usage();
                }
            }
            _ => usage(),
        }
    }
    if a.only.is_empty() {
        a.only = if a.profile == Side::Both {
            SECTIONS.to_vec()
        } else {
            vec!["memory"]
        };
    }
    a.only.sort_by_key(|s| SECTIONS.iter().position(|x| x == s));
    a.only.dedup();
    a
}

/// A command's first line of output (empty if it printed nothing), or `unknown` if it
/// could not run or failed.
fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.lines().next().unwrap_or_default().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// When, with what, on what: printed first, so saved results say where they came from.
fn print_header() {
    // The code is measured as it is on disk, so say which files differ from the commit.
    let dirty: Vec<String> = Command::new("git")
        .args(["status", "--porcelain"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.get(3..).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".to_owned());
    println!("# qupid-bench");
    println!();
    println!(
        "- date: {}",
        output("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"])
    );
    println!("- rustc: {}", output("rustc", &["--version"]));
    println!(
        "- machine: nproc {}, {}, {cpu}",
        output("nproc", &[]),
        output("uname", &["-m"]),
    );
    println!(
        "- commit: {}{}",
        output("git", &["rev-parse", "--short", "HEAD"]),
        if dirty.is_empty() {
            String::new()
        } else {
            format!(", with uncommitted changes to {}", dirty.join(", "))
        }
    );
    println!(
        "- profile: {}",
        if cfg!(debug_assertions) {
            "debug (numbers mean nothing: use --release)"
        } else {
            "release"
        }
    );
}

fn print_memory(m: &memory::Memory) {
    println!("## memory");
    println!();
    println!(
        "pipeline: {} entries ({} unique keys, 10% duplicates), no-op work, concurrency {CONCURRENCY}, {} runs, median (min–max)",
        m.entries, unique(m.entries), m.runs
    );
    println!();
    println!("| pipeline | entries/s | min–max | ratio |");
    println!("|---|---:|---:|---:|");
    let (h, q) = (m.hand, m.qupid);
    println!(
        "| hand-written (async-channel + Mutex<HashMap>) | {:.0} | {:.0}–{:.0} | 1.00 |",
        h.median, h.min, h.max
    );
    println!(
        "| qupid `Pipeline` + `MemoryLedger` | {:.0} | {:.0}–{:.0} | {:.2} |",
        q.median,
        q.min,
        q.max,
        q.median / h.median
    );
    println!();
    println!("| memory ledger, one core | value |");
    println!("|---|---:|");
    println!("| offers/s, new keys (batches of 256) | {:.0} |", m.fresh);
    println!("| offers/s, duplicates (batches of 256) | {:.0} |", m.dup);
    println!(
        "| resident bytes per retained completed key at {} keys ({}-byte keys) | {:.0} ({:.0} + key length) |",
        m.keys,
        m.key_len,
        m.per_key,
        m.per_key - m.key_len as f64
    );
}

/// `qupid ÷ baseline`, how it compares with the target, and whether it is met (blank where
/// there is no target).
fn judge(qupid: f64, baseline: f64, target: Option<f64>) -> (String, String, &'static str) {
    let ratio = qupid / baseline;
    let ratio = format!("{ratio:.2}×");
    match target {
        Some(t) => {
            let met = if qupid / baseline >= t {
                "yes"
            } else {
                "**no**"
            };
            (ratio, format!("≥ {t}×"), met)
        }
        None => (ratio, String::new(), ""),
    }
}

fn print_comparison(c: &Comparison) {
    println!("## {}", c.ledger);
    println!();
    for line in &c.setup {
        println!("{line}");
        println!();
    }
    println!(
        "pipeline: {} entries ({} unique keys, 10% duplicates), no-op process/save, qupid concurrency {CONCURRENCY}, {} runs, median (min–max)",
        c.entries,
        unique(c.entries),
        c.runs
    );
    println!();
    println!("| pipeline | entries/s | min–max | qupid ÷ this | target | met |");
    println!("|---|---:|---:|---:|---:|:---:|");
    for b in &c.baselines {
        let (ratio, target, met) = match &c.qupid {
            Some((_, q)) => judge(q.median, b.rate.median, b.target),
            None => (
                "–".into(),
                b.target.map_or(String::new(), |t| format!("≥ {t}×")),
                "–",
            ),
        };
        println!(
            "| {} | {:.0} | {:.0}–{:.0} | {ratio} | {target} | {met} |",
            b.label, b.rate.median, b.rate.min, b.rate.max
        );
    }
    if let Some((label, q)) = &c.qupid {
        println!(
            "| {label} | {:.0} | {:.0}–{:.0} | 1.00× | | |",
            q.median, q.min, q.max
        );
    }
}

/// One line per ledger: qupid against each baseline, and the targets.
fn print_summary(done: &[Comparison], skipped: &[(&str, String)]) {
    println!("## summary: qupid against the raw loops");
    println!();
    println!("| ledger | qupid entries/s | ÷ (a) | target | met | ÷ (b) | target | met |");
    println!("|---|---:|---:|---:|:---:|---:|---:|:---:|");
    for c in done {
        let Some((_, q)) = &c.qupid else { continue };
        let mut cells = Vec::new();
        for tag in ["(a)", "(b)"] {
            match c.baselines.iter().find(|b| b.tag == tag) {
                Some(b) => {
                    let (ratio, target, met) = judge(q.median, b.rate.median, b.target);
                    cells.push(format!("{ratio} | {target} | {met}"));
                }
                None => cells.push("– | – | –".to_owned()),
            }
        }
        println!(
            "| {} | {:.0} | {} | {} |",
            c.ledger, q.median, cells[0], cells[1]
        );
    }
    for (ledger, why) in skipped {
        println!("| {ledger} | skipped: {why} | | | | | | |");
    }
}

fn main() {
    let a = args();
    let ledgers = a
        .only
        .iter()
        .filter(|s| !matches!(**s, "memory" | "latency" | "retained" | "purge" | "shards"))
        .count();
    if a.profile != Side::Both {
        for section in &a.only {
            match *section {
                "memory" => {
                    let (n, r) = (a.entries.unwrap_or(200_000), a.runs.unwrap_or(5));
                    memory::profile(a.profile, n, r);
                }
                "latency" => print_latency(&latency::run(TRICKLE, a.entries.unwrap_or(20_000))),
                "retained" => {
                    print_retained(&retained::run(&a.retained, a.entries.unwrap_or(50_000)));
                }
                "purge" => print_purge(&purge::run(a.entries.unwrap_or(PURGED))),
                "shards" => print_shards(&shards::run(
                    a.entries.unwrap_or(50_000),
                    a.runs.unwrap_or(3),
                )),
                ledger => {
                    let n = a.entries.unwrap_or(50_000);
                    let r = a.runs.unwrap_or(3);
                    match run_ledger(ledger, a.profile, n, r) {
                        Ok(c) => print_comparison(&c),
                        Err(why) => println!("{ledger}: skipped: {why}"),
                    }
                }
            }
        }
        return;
    }
    print_header();
    println!();
    if a.only.contains(&"memory") {
        let m = memory::run(a.entries.unwrap_or(200_000), a.runs.unwrap_or(5), a.keys);
        print_memory(&m);
        println!();
    }
    let (mut done, mut skipped) = (Vec::new(), Vec::new());
    for ledger in a
        .only
        .iter()
        .filter(|s| !matches!(**s, "memory" | "latency" | "retained" | "purge" | "shards"))
    {
        let (n, r) = (a.entries.unwrap_or(50_000), a.runs.unwrap_or(3));
        match run_ledger(ledger, Side::Both, n, r) {
            Ok(c) => {
                print_comparison(&c);
                done.push(c);
            }
            Err(why) => {
                println!("## {ledger}");
                println!();
                println!("{ledger}: skipped: {why}");
                skipped.push((*ledger, why));
            }
        }
        println!();
    }
    if ledgers > 0 {
        print_summary(&done, &skipped);
    }
    if a.only.contains(&"latency") {
        println!();
        print_latency(&latency::run(TRICKLE, a.entries.unwrap_or(20_000)));
    }
    if a.only.contains(&"retained") {
        println!();
        print_retained(&retained::run(&a.retained, a.entries.unwrap_or(50_000)));
    }
    if a.only.contains(&"purge") {
        println!();
        print_purge(&purge::run(a.entries.unwrap_or(PURGED)));
    }
    if a.only.contains(&"shards") {
        println!();
        print_shards(&shards::run(
            a.entries.unwrap_or(50_000),
            a.runs.unwrap_or(3),
        ));
    }
}

fn print_shards(rows: &[shards::Row]) {
    println!("## redis shards");
    println!();
    println!(
        "The pipeline's rate (entries/s, median of the runs) over a Redis namespace split into \
         shards, each batch sent as one script per shard it touches, the shards' at once; \
         `QUPID_REDIS_CLUSTER=redis://host:port,...` adds a Redis Cluster."
    );
    println!();
    let counts: Vec<String> = shards::COUNTS
        .iter()
        .map(|n| format!("{n} shard(s)"))
        .collect();
    println!("| target | {} | ÷ 1 shard |", counts.join(" | "));
    println!("|---|{}---:|", "---:|".repeat(counts.len()));
    for row in rows {
        match &row.rates {
            Ok(rates) => {
                let one = rates.first().copied().unwrap_or(f64::NAN);
                let cells: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
                let ratios: Vec<String> =
                    rates.iter().map(|r| format!("{:.2}×", r / one)).collect();
                println!(
                    "| {} | {} | {} |",
                    row.target,
                    cells.join(" | "),
                    ratios.join(" / ")
                );
            }
            Err(why) => println!("| {} | skipped: {why} | | | |", row.target),
        }
    }
}

/// Completed keys the purge section fills each ledger with, then purges.
const PURGED: usize = 1_000_000;

fn print_purge(rows: &[purge::Row]) {
    let ms = |d: std::time::Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    println!("## purge");
    println!();
    println!(
        "`purge` of the completed keys by age (wall time, keys removed of keys filled), and a \
         trickle beside it: one fresh key at a time, `offer_and_start` then `complete`, a key \
         started at most every millisecond. Latency (ms): from the offer to the completion's \
         answer; gap: the longest time between two keys' ends, the trickle's own code and its \
         pacing included. Against the same trickle for 10 s with no purge, on the same ledger \
         with the keys still in it."
    );
    println!();
    println!(
        "| ledger | removed | purge s | removed/s | during purge: keys | p50 | p99 | max | gap | \
         alone: p50 | p99 | max | gap |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        match &row.result {
            Ok(m) => println!(
                "| {} | {} of {} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.ledger,
                m.removed,
                m.filled,
                m.purge.as_secs_f64(),
                m.removed as f64 / m.purge.as_secs_f64(),
                m.during.keys,
                ms(m.during.p50),
                ms(m.during.p99),
                ms(m.during.max),
                ms(m.during.gap),
                ms(m.without.p50),
                ms(m.without.p99),
                ms(m.without.max),
                ms(m.without.gap),
            ),
            Err(why) => println!("| {} | skipped: {why} | | | | | | | | | | | |", row.ledger),
        }
    }
}

fn print_retained(rows: &[retained::Row]) {
    println!("## retained keys");
    println!();
    println!(
        "The pipeline's rate (entries/s, fresh keys, 10% duplicates; median of 3 runs, after \
         one uncounted warm-up run) with completed keys already in the ledger, and bytes per retained key (memory: resident; Redis: \
         used_memory; SQLite: file and WAL; PostgreSQL: the table with its indexes)."
    );
    println!();
    println!("| ledger | retained | entries/s | ÷ empty | bytes per retained key |");
    println!("|---|---:|---:|---:|---:|");
    for row in rows {
        match &row.points {
            Ok(points) => {
                let empty = points.first().map_or(f64::NAN, |p| p.rate);
                for p in points {
                    println!(
                        "| {} | {} | {:.0} | {:.2}× | {} |",
                        row.ledger,
                        p.retained,
                        p.rate,
                        p.rate / empty,
                        p.bytes_per_key.map_or("".to_owned(), |b| format!("{b:.0}"))
                    );
                }
            }
            Err(why) => println!("| {} | skipped: {why} | | | |", row.ledger),
        }
    }
}

/// Entries of the latency section's trickle (100 a second: 3 s per ledger).
const TRICKLE: usize = 300;

fn print_latency(rows: &[latency::Row]) {
    let ms = |d: std::time::Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    println!("## latency");
    println!();
    println!(
        "From the source handing an entry over to its save done (ms), concurrency {CONCURRENCY}: \
         {TRICKLE} entries at 100 a second, then a stream as fast as the pipeline takes it."
    );
    println!();
    println!("| ledger | trickle p50 | p99 | max | load p50 | p99 | max | load entries/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        match &row.result {
            Ok((t, l)) => println!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.0} |",
                row.ledger,
                ms(t.p50),
                ms(t.p99),
                ms(t.max),
                ms(l.p50),
                ms(l.p99),
                ms(l.max),
                l.rate
            ),
            Err(why) => println!("| {} | skipped: {why} | | | | | | |", row.ledger),
        }
    }
}

fn run_ledger(ledger: &str, side: Side, entries: usize, runs: usize) -> Result<Comparison, String> {
    match ledger {
        "sqlite" => sqlite::run(side, entries, runs),
        "sqlite-full" => sqlite::run_full(side, entries, runs),
        "redis" => redis::run(side, entries, runs),
        "postgres" => postgres::run(side, entries, runs),
        other => unreachable!("no section {other}"),
    }
}
