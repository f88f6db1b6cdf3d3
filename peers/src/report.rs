//! The report: where and with what it ran, and the tables, in Markdown.

use std::fmt::Write as _;
use std::process::Command;

use crate::servers::{postgres_client, postgres_url, redis_url};
use crate::{Args, Conf, Row, Store, CONCURRENCY, RETAINED, SCALING, WORKERS};

/// A command's first line of output, or `unknown`.
fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.lines().next().unwrap_or_default().trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// When, with what, on what.
#[derive(Debug)]
pub struct Header {
    /// `YYYY-MM-DD`, UTC: the report's file name.
    pub day: String,
    /// Date and time, UTC.
    time: String,
    /// The command that reproduces the run.
    command: String,
    /// `rustc --version`.
    rustc: String,
    /// nproc, architecture, CPU.
    machine: String,
    /// qupid's commit, and whether its sources differ from it.
    commit: String,
    /// The peers' crate versions, as locked.
    versions: Vec<(String, String)>,
    /// The servers' versions and commit settings.
    servers: String,
}

impl Header {
    /// Asks the system, git, the lock file and the servers.
    pub fn collect(a: &Args) -> Header {
        let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let dirty = output(
            "git",
            &["-C", repo, "status", "--porcelain", "--", "crates"],
        );
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown cpu".to_owned());
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
            .unwrap_or_default();
        let mut versions = Vec::new();
        let mut name = None;
        for line in lock.lines() {
            if let Some(n) = line.strip_prefix("name = ") {
                name = Some(n.trim_matches('"').to_owned());
            } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
                if n.starts_with("apalis") || ["sqlx", "redis", "plotters"].contains(&n.as_str()) {
                    versions.push((n, v.trim_matches('"').to_owned()));
                }
            }
        }
        let args = if a.given.is_empty() {
            String::new()
        } else {
            format!(" -- {}", a.given.join(" "))
        };
        Header {
            day: output("date", &["-u", "+%Y-%m-%d"]),
            time: output("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
            command: format!("cargo run --release --manifest-path peers/Cargo.toml{args}"),
            rustc: output("rustc", &["--version"]),
            machine: format!(
                "nproc {}, {}, {cpu}",
                output("nproc", &[]),
                output("uname", &["-m"])
            ),
            commit: format!(
                "{}{}",
                output("git", &["-C", repo, "rev-parse", "--short", "HEAD"]),
                if dirty.is_empty() || dirty == "unknown" {
                    String::new()
                } else {
                    " (with uncommitted changes under crates/)".to_owned()
                }
            ),
            versions,
            servers: servers(),
        }
    }

    /// The header as Markdown list items.
    pub fn lines(&self) -> Vec<String> {
        let versions: Vec<String> = self
            .versions
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        vec![
            format!("- command: `{}`", self.command),
            format!("- date: {}", self.time),
            format!("- rustc: {}", self.rustc),
            format!("- machine: {}", self.machine),
            format!("- qupid commit: {}", self.commit),
            format!("- crates: {}", versions.join(", ")),
            format!("- servers: {}", self.servers),
        ]
    }
}

/// The servers' versions, or why they could not be asked.
fn servers() -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let redis = async {
            let client = redis::Client::open(redis_url()).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await
                .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .map(|v| format!("Redis {} at {}", v.trim(), redis_url()))
        }
        .await
        .unwrap_or_else(|| format!("Redis at {} does not answer", redis_url()));
        let postgres = async {
            let client = postgres_client(&postgres_url()).await.ok()?;
            let mut shown = Vec::new();
            for s in ["server_version", "synchronous_commit", "fsync"] {
                let row = client.query_one(&format!("SHOW {s}"), &[]).await.ok()?;
                shown.push(row.get::<_, String>(0));
            }
            Some(format!(
                "PostgreSQL {} (synchronous_commit {}, fsync {}) at {}",
                shown[0],
                shown[1],
                shown[2],
                postgres_url()
            ))
        }
        .await
        .unwrap_or_else(|| format!("PostgreSQL at {} does not answer", postgres_url()));
        format!("{redis}; {postgres}")
    })
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `median (min–max)`, or what failed.
fn cell(row: Option<&Row>) -> String {
    match row.and_then(|r| r.rates().map(|rates| (r, rates))) {
        Some((r, (m, lo, hi))) => {
            let shrunk = if r.failure.is_some() {
                format!(" ({} entries)", thousands(r.size as f64))
            } else {
                String::new()
            };
            format!(
                "{} ({}–{}){shrunk}",
                thousands(m),
                thousands(lo),
                thousands(hi)
            )
        }
        None => match row.and_then(|r| r.failure.as_ref()) {
            Some((n, _)) => format!("failed at {}", thousands(*n as f64)),
            None => "–".to_owned(),
        },
    }
}

/// What each configuration is, for the notes under the table.
fn setup(c: Conf) -> &'static str {
    match c {
        Conf::Floor => "a bounded `async-channel` (4 × workers), a `Mutex<HashSet<String>>` of every key seen, N worker tasks; clock: first offer to last worker's exit",
        Conf::Qupid(Store::Memory) => "`Pipeline` + `MemoryLedger::new()`",
        Conf::Qupid(Store::Sqlite) => "`Pipeline` + `SqliteLedger::open` on a fresh file in the temp dir (WAL, synchronous NORMAL, group commit: qupid's defaults)",
        Conf::Qupid(Store::Redis) => "`Pipeline` + `RedisLedger::open` in a fresh namespace, its keys deleted after",
        Conf::Qupid(Store::Postgres) => "`Pipeline` + `PostgresLedger::open` in a fresh namespace (default pool of 16), `DROP SCHEMA qupid_<ns> CASCADE` after",
        Conf::Apalis(Store::Memory) => "`MemoryStorage`, tasks with `idempotency_key` pushed first (as its README does), then the worker; the clock covers both",
        Conf::Apalis(Store::Sqlite) => "`SqliteStorage` on a fresh file (`SqliteStorage::setup`: WAL; synchronous NORMAL on every pooled connection, like qupid), `batch_size(64)`, `poll_with_interval(100 ms)`; pushed 256 tasks per `push_all` (one transaction) while the worker runs; unique jobs: index on `(job_type, idempotency_key)`, `ON CONFLICT DO NOTHING`",
        Conf::Apalis(Store::Redis) => "`RedisStorage` on a fresh queue (keys deleted after), `batch_size(64)`, `poll_with_interval(100 ms)`; 256 tasks per push (one Lua script); unique jobs: `SETNX QUEUE:idempotency:KEY`",
        Conf::ApalisRedisTtl => "the same with `Config::idempotency_ttl(Some(1 day))`: with the default (`None`, documented as \"keys do not expire\"), the push script runs `EXPIRE key 0`, which deletes the key at once, so nothing is de-duplicated",
        Conf::Apalis(Store::Postgres) => "`PostgresStorage` in a fresh database (dropped after), `batch_size(64)`, `with_pubsub()` + `poll_with_interval(100 ms)`; 256 tasks per push (one `INSERT … unnest`); unique jobs: a unique index on `(job_type, idempotency_key)` but no `ON CONFLICT`, so a batch holding a repeated key fails whole and is pushed again task by task, duplicates skipped",
    }
}

/// The whole report.
pub fn markdown(h: &Header, a: &Args, main: &[Row], scaling: &[Row], retained: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# qupid against its peers, {}\n", h.day);
    for l in h.lines() {
        let _ = writeln!(s, "{l}");
    }
    let _ = writeln!(
        s,
        "- workload: N entries with 10% duplicate keys (entry i has key `record/{{i mod 0.9N:08}}`), \
         no-op work, concurrency {CONCURRENCY}; N = {} for the floor and the in-memory configurations, \
         {} for the storages; R = {} runs per configuration, each in its own process; limit {} s per run\n",
        thousands(a.memory_entries as f64),
        thousands(a.storage_entries as f64),
        a.runs,
        a.limit.as_secs()
    );

    let floor = main
        .iter()
        .find(|r| r.conf == Conf::Floor)
        .and_then(Row::rates)
        .map(|r| r.0);
    let _ = writeln!(s, "## Throughput, concurrency {CONCURRENCY}\n");
    let _ = writeln!(
        s,
        "| configuration | N | entries/s (median) | min–max | ÷ floor | peak RSS | handler calls | keys processed >1× | max × per key |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in main {
        let (median, range) = match r.rates() {
            Some((m, lo, hi)) => (thousands(m), format!("{}–{}", thousands(lo), thousands(hi))),
            None => ("**failed**".to_owned(), "–".to_owned()),
        };
        let ratio = match (r.rates(), floor) {
            (Some((m, _, _)), Some(f)) => format!("{:.2}", m / f),
            _ => "–".to_owned(),
        };
        let rss = r.outcomes.iter().map(|o| o.rss_kib).max().unwrap_or(0);
        let calls = r.outcomes.iter().map(|o| o.processed).max().unwrap_or(0);
        let twice = r.outcomes.iter().map(|o| o.twice).max().unwrap_or(0);
        let max = r.outcomes.iter().map(|o| o.max).max().unwrap_or(0);
        let _ = writeln!(
            s,
            "| {} | {} | {median} | {range} | {ratio} | {:.0} MiB | {} | {} | {} |",
            r.conf.label(),
            thousands(r.size as f64),
            rss as f64 / 1024.0,
            thousands(calls as f64),
            thousands(twice as f64),
            max
        );
    }
    let _ = writeln!(
        s,
        "\nPeak RSS is the child process's VmHWM (the largest over the runs). \"Handler calls\", \
         \"keys processed >1×\" and \"max × per key\" are the largest over the runs; a \
         configuration that drops every duplicate shows 0.9 N calls, 0 and 1."
    );
    let failures: Vec<&Row> = main
        .iter()
        .chain(scaling)
        .chain(retained)
        .filter(|r| r.failure.is_some())
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "\n### Failures\n");
        let _ = writeln!(
            s,
            "| configuration | workers | retained | failed at N | how | largest N finished |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---|---:|");
        for r in failures {
            let (n, why) = r.failure.as_ref().expect("filtered");
            let finished = if r.outcomes.is_empty() {
                "none".to_owned()
            } else {
                thousands(r.size as f64)
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {finished} |",
                r.conf.label(),
                r.workers,
                thousands(r.retained as f64),
                thousands(*n as f64),
                why.replace('|', "/")
            );
        }
    }

    let _ = writeln!(
        s,
        "\n## Throughput as workers grow\n\nentries/s, median (min–max); the {CONCURRENCY} column is the table above.\n"
    );
    let _ = write!(s, "| configuration |");
    for w in WORKERS {
        let _ = write!(s, " {w} |");
    }
    let _ = writeln!(s, "\n|---|{}", "---:|".repeat(WORKERS.len()));
    for conf in SCALING {
        let _ = write!(s, "| {} |", conf.label());
        for w in WORKERS {
            let row = if w == CONCURRENCY {
                main.iter().find(|r| r.conf == conf)
            } else {
                scaling.iter().find(|r| r.conf == conf && r.workers == w)
            };
            let _ = write!(s, " {} |", cell(row));
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(
        s,
        "\n## Throughput with retained completed keys\n\nentries/s, median (min–max), concurrency {CONCURRENCY}, \
         N = {} for both ledgers; the ledger holds K completed keys (`old/…`, never offered by the \
         workload) before the run, put there through the `Ledger` API outside the clock.\n",
        thousands(a.memory_entries as f64)
    );
    let ks = crate::retained_sizes(a);
    let _ = write!(s, "| ledger |");
    for k in ks {
        let _ = write!(s, " K = {} |", thousands(k as f64));
    }
    let _ = writeln!(s, "\n|---|{}", "---:|".repeat(ks.len()));
    for conf in RETAINED {
        let _ = write!(s, "| {} |", conf.label());
        for k in ks {
            let row = retained.iter().find(|r| r.conf == conf && r.retained == k);
            let rss = row
                .and_then(|r| r.outcomes.iter().map(|o| o.rss_kib).max())
                .map(|kib| format!("; peak RSS {:.0} MiB", kib as f64 / 1024.0))
                .unwrap_or_default();
            let _ = write!(s, " {}{rss} |", cell(row));
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(s, "\n## How each configuration is set up\n");
    for c in Conf::all() {
        let _ = writeln!(s, "- **{}**: {}", c.label(), setup(c));
    }
    let _ = writeln!(
        s,
        "- every apalis worker: `WorkerBuilder::new(..).backend(..).data(tally).concurrency(W).parallelize(tokio::spawn).build(job)`; \
         the clock stops at the end of the last job (a watcher stops the worker after a quiet period, not counted)\n\
         - every qupid pipeline: `Pipeline::builder(ledger).source(Source::stream(entries)).process(..).save(..).concurrency(W)`, \
         everything else default; the clock runs from building the pipeline to the end of `run()`\n\
         - not in any clock: making the entries or tasks, opening the ledger or pool, migrations, retained keys"
    );
    s
}
