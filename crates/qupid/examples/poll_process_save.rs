//! The seed's picture: poll a datastore, process each record, save the output as a file.
//!
//! A local datastore holds a few thousand records and, like many APIs, cannot tell which ones
//! were already handled: every poll returns every record. The ledger turns what is in flight
//! or done into duplicates (counted in the report), so each record is processed once. The
//! output folder is the non-transactional store. The run ends when everything is saved.
//!
//! By default the ledger is a SQLite file in the working folder, so a second run skips
//! everything the first one saved. `--memory` uses the in-memory ledger instead (a second run
//! then processes everything again), and `--ledger URL` any ledger (`redis://…`,
//! `postgres://…`; several copies of this program can then share the work).
//!
//! ```text
//! cargo run --release -p qupid --features full --example poll_process_save -- \
//!     [--records N] [--out DIR] [--ledger URL | --memory] [--namespace NS]
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use qupid::{AnyLedger, Backoff, Entry, Pipeline, Source};

/// One record of the datastore.
#[derive(Debug, Clone)]
struct Customer {
    id: u32,
    name: String,
    orders: Vec<u32>,
}

/// The datastore: records, and "processed" meaning "has an output file".
struct Datastore {
    records: Vec<Customer>,
    out: PathBuf,
    /// How many times each record's output was saved, to show that none was saved twice.
    saves: Vec<AtomicU32>,
}

impl Datastore {
    fn new(n: u32, out: PathBuf) -> Self {
        let records = (0..n)
            .map(|id| Customer {
                id,
                name: format!("customer {id}"),
                orders: (0..(id % 7 + 1))
                    .map(|o| (id * 31 + o * 17) % 500)
                    .collect(),
            })
            .collect();
        Datastore {
            records,
            out,
            saves: (0..n).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn output_path(&self, id: u32) -> PathBuf {
        self.out.join(format!("customer-{id:05}.json"))
    }

    /// Every record: the datastore cannot tell which ones were handled.
    fn all(&self) -> Vec<Customer> {
        self.records.clone()
    }

    /// Records whose output file does not exist yet.
    fn unsaved(&self) -> usize {
        self.records
            .iter()
            .filter(|c| !self.output_path(c.id).exists())
            .count()
    }
}

struct Args {
    records: u32,
    out: PathBuf,
    ledger: String,
    namespace: String,
}

/// A SQLite file in the working folder when this build has SQLite, else memory.
fn default_ledger() -> String {
    if cfg!(feature = "sqlite") {
        "sqlite://qupid-example.db".to_owned()
    } else {
        "memory:".to_owned()
    }
}

const USAGE: &str = "usage: poll_process_save [--records N] [--out DIR] [--ledger URL | --memory] \
                     [--namespace NS]

  --records N      how many records the datastore holds (default 3000)
  --out DIR        the folder the output files go to (default ./output)
  --ledger URL     the ledger: sqlite://FILE (default sqlite://qupid-example.db), redis://HOST,
                   postgres://USER@HOST/DB, or memory: (also QUPID_LEDGER)
  --memory         the in-memory ledger (a second run processes everything again)
  --namespace NS   the queue's namespace in a shared ledger (default `default`; also
                   QUPID_NAMESPACE)
";

/// What the command line asks for.
enum Parsed {
    Run(Args),
    Help,
}

fn args() -> Result<Parsed, String> {
    let mut a = Args {
        records: 3_000,
        out: PathBuf::from("output"),
        ledger: std::env::var("QUPID_LEDGER").unwrap_or_else(|_| default_ledger()),
        // The CLI's default too, so `qupid stats` sees what this run did.
        namespace: std::env::var("QUPID_NAMESPACE")
            .unwrap_or_else(|_| qupid::ledger::DEFAULT_NAMESPACE.to_owned()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--records" => {
                a.records = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--records needs a number")?
            }
            "--out" => a.out = it.next().map(PathBuf::from).ok_or("--out needs a folder")?,
            "--ledger" => a.ledger = it.next().ok_or("--ledger needs a URL")?,
            "--memory" => a.ledger = "memory:".to_owned(),
            "--namespace" => a.namespace = it.next().ok_or("--namespace needs a name")?,
            "-h" | "--help" => return Ok(Parsed::Help),
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(Parsed::Run(a))
}

/// Stdout, which may be closed early (`| head -1`): the run goes on and finishes its work,
/// printing nothing more, instead of panicking as `println!` does.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Prints a line to stdout, unless its reader has gone.
fn say(line: impl std::fmt::Display) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("cannot write to stdout: {e}");
        }
    }
}

/// Makes `dir` if need be and checks that files can be written in it, so an unusable
/// `--out` is one clear error naming it, not a failure per record.
async fn output_folder(dir: &Path) -> Result<(), String> {
    let cannot =
        |e: std::io::Error| format!("cannot use {} as the output folder: {e}", dir.display());
    tokio::fs::create_dir_all(dir).await.map_err(cannot)?;
    let probe = dir.join(format!(".poll_process_save-{}.tmp", std::process::id()));
    tokio::fs::write(&probe, b"").await.map_err(cannot)?;
    tokio::fs::remove_file(&probe).await.map_err(cannot)
}

/// A rate for people: whole numbers with thousands separators (`6,920/s`), one decimal
/// below 10 (`4.5/s`).
fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec < 0.0 {
        return "-/s".to_owned();
    }
    if per_sec < 10.0 {
        return format!("{per_sec:.1}/s");
    }
    let digits = format!("{per_sec:.0}");
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 2);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out.push_str("/s");
    out
}

/// The progress bar: `{rate}` is [`rate`] of indicatif's estimate (its own `{per_sec}` shows
/// ten decimals when given a width).
fn progress_style() -> Result<ProgressStyle, indicatif::style::TemplateError> {
    Ok(ProgressStyle::with_template(
        "{bar:40.cyan/blue} {pos:>6}/{len:6} saved  {rate:>10}  {msg}",
    )?
    .with_key(
        "rate",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&rate(state.per_sec()));
        },
    ))
}

/// Writes `contents` to `path` through a temporary file and a rename: a crash never leaves a
/// half-written output, and writing the same output twice is harmless (idempotent).
async fn save_file(path: &Path, contents: String) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, contents).await?;
    tokio::fs::rename(&tmp, path).await
}

#[tokio::main]
async fn main() {
    // Errors end the run with one line (and a non-zero exit), never a retry loop: the ledger's
    // errors name the file or server and say what is wrong with it.
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match args() {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            // Help goes to stdout and succeeds; a closed stdout is not worth a panic.
            let _ = std::io::stdout().write_all(USAGE.as_bytes());
            return Ok(());
        }
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    output_folder(&args.out).await?;
    let store = Arc::new(Datastore::new(args.records, args.out.clone()));
    let shown = qupid::redact_url(&args.ledger);
    let ledger = AnyLedger::open(&args.ledger, &args.namespace)
        .await
        .map_err(|e| format!("cannot open the ledger {shown}: {e}"))?;
    let done_before = qupid::LedgerAdmin::stats(&ledger).await?.completed;
    say(format_args!(
        "datastore: {} records; ledger: {shown} ({done_before} keys completed before this run); \
         output folder: {}",
        args.records,
        args.out.display()
    ));

    // Poll every record every 100 ms: what is in flight or done comes back as a duplicate.
    let polled = store.clone();
    let source = Source::poll(Duration::from_millis(100), move || {
        let records = polled.all();
        // Each record becomes an entry of its own: one that cannot (say, an invalid key) is
        // skipped, counted in the report and logged, and never holds up the others.
        async move {
            Ok::<_, std::io::Error>(
                records
                    .into_iter()
                    .map(|c| Entry::new(format!("customer/{:05}", c.id), c)),
            )
        }
    })
    .named("datastore");

    let saver = store.clone();
    let pipeline = Pipeline::builder(ledger)
        .name("customers")
        .source(source)
        .process(|a| async move {
            let c = a.payload();
            // Some work: a summary of the customer's orders, taking a few milliseconds.
            tokio::time::sleep(Duration::from_millis(u64::from(c.id % 5) + 1)).await;
            if fastrand::u32(0..100) == 0 {
                // A flaky dependency: retried with backoff.
                return Err(format!("pricing service timed out for {}", a.key()));
            }
            let total: u32 = c.orders.iter().sum();
            Ok(format!(
                "{{\"id\":{},\"name\":\"{}\",\"orders\":{},\"total\":{}}}\n",
                c.id,
                c.name,
                c.orders.len(),
                total
            ))
        })
        .save(move |a, json: String| {
            let id = a.payload().id;
            let path = saver.output_path(id);
            let saver = saver.clone();
            async move {
                save_file(&path, json).await?;
                saver.saves[id as usize].fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::io::Error>(())
            }
        })
        .concurrency(32)
        .backoff(Backoff {
            initial: Duration::from_millis(20),
            ..Backoff::default()
        })
        // Done when every record the datastore returns is finished in the ledger, wherever
        // it was processed (several copies can share a Redis or PostgreSQL ledger).
        .stop_when_drained()
        // Ctrl-C and SIGTERM drain alike: running attempts finish, the rest is released.
        .stop_on_signals()
        .build()?;

    let bar = ProgressBar::new(u64::from(args.records));
    bar.set_style(progress_style()?);
    let progress = pipeline.progress();
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                let r = progress.snapshot();
                bar.set_position(r.completed);
                bar.set_message(match progress.ledger_down_for() {
                    Some(down) => format!(
                        "LEDGER DOWN for {down:.0?}, retrying: {}",
                        progress.ledger_error().unwrap_or_default()
                    ),
                    None => format!(
                        "duplicates {}  retries {}  invalid {}",
                        r.duplicates, r.failed_attempts, r.invalid
                    ),
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let report = pipeline.run().await;
    ticker.abort();
    let report = report?;
    bar.set_position(report.completed);
    bar.finish();

    let left = store.unsaved();
    let twice = store
        .saves
        .iter()
        .filter(|n| n.load(Ordering::Relaxed) > 1)
        .count();
    say("");
    say(format_args!("{report}"));
    say("");
    say(format_args!(
        "{} records processed and saved to {} in {:.2?} ({}); {} polled entries were \
         duplicates of work in flight or already done.",
        report.completed,
        args.out.display(),
        report.elapsed,
        rate(report.completed_per_sec()),
        report.duplicates
    ));
    say(format_args!("records saved more than once: {twice}"));
    if left == 0 {
        say("every record is saved. Run again: the ledger remembers what is done.");
    } else {
        say(format_args!(
            "{left} records have no output yet (stopped early, or dead: run again)."
        ));
    }
    Ok(())
}
