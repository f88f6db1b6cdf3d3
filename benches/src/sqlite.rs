//! The SQLite section: qupid's pipeline over a [`SqliteLedger`] against a raw rusqlite loop
//! making the same state changes with the fewest statements.
//!
//! The raw loop keeps one table of key → state (`WITHOUT ROWID`, no other index) and, for
//! each entry, claims the key (`INSERT OR IGNORE`; a key already there is a duplicate and is
//! skipped), marks it running, then completed: three statements, prepared once. It commits
//! (a) after every entry, or (b) after every 1,000 entries. Both sides use a fresh file per
//! run in WAL mode with `synchronous = NORMAL` (qupid's default).
//!
//! Under NORMAL a WAL commit does not sync the disk, so committing per entry costs little more
//! than committing per batch, and grouping commits cannot show. The `sqlite-full` section runs
//! the same comparison with `synchronous = FULL` on both sides (every commit synced), on fewer
//! entries: there, group commit is what keeps a key from costing one fsync.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qupid::ledger::sqlite::Synchronous;
use qupid::ledger::SqliteLedger;
use rusqlite::Connection;

use crate::workload::{
    fresh_name, qupid_pipeline, runtime, unique, workload, Comparison, Runs, Side,
};

const BATCH: usize = 1_000;

/// A fresh directory in the system's temp dir, removed (with everything in it) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let dir = std::env::temp_dir().join(fresh_name("qupid_bench_sqlite"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
    fn file(&self) -> PathBuf {
        self.0.join("ledger.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The raw loop over the file at `path`, committing every `per_tx` entries. Answers the time
/// taken and how many keys were completed.
fn raw(
    path: &Path,
    work: &[(String, u64)],
    per_tx: usize,
    sync: Synchronous,
) -> rusqlite::Result<(Duration, u64)> {
    let conn = Connection::open(path)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    assert_eq!(mode.to_ascii_lowercase(), "wal", "the file is in WAL mode");
    let sync = match sync {
        Synchronous::Full => "FULL",
        _ => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.execute_batch(
        "CREATE TABLE claims (key TEXT PRIMARY KEY, state INTEGER NOT NULL) WITHOUT ROWID",
    )?;
    let mut begin = conn.prepare("BEGIN")?;
    let mut commit = conn.prepare("COMMIT")?;
    let mut claim = conn.prepare("INSERT OR IGNORE INTO claims (key, state) VALUES (?1, 0)")?;
    let mut running = conn.prepare("UPDATE claims SET state = 1 WHERE key = ?1")?;
    let mut completed = conn.prepare("UPDATE claims SET state = 2 WHERE key = ?1")?;
    let start = Instant::now();
    let mut done = 0;
    for chunk in work.chunks(per_tx) {
        begin.execute([])?;
        for (key, v) in chunk {
            if claim.execute([key])? == 0 {
                continue; // a duplicate
            }
            running.execute([key])?;
            std::hint::black_box(v); // the no-op work and save
            completed.execute([key])?;
            done += 1;
        }
        commit.execute([])?;
    }
    Ok((start.elapsed(), done))
}

/// One run of the raw loop on a fresh file.
fn raw_run(entries: usize, per_tx: usize, sync: Synchronous) -> Result<Duration, String> {
    let dir = TempDir::new()?;
    let work = workload(entries);
    let (d, done) =
        raw(&dir.file(), &work, per_tx, sync).map_err(|e| format!("raw rusqlite: {e}"))?;
    assert_eq!(
        done,
        unique(entries) as u64,
        "raw loop completed each unique key once"
    );
    Ok(d)
}

/// One run of qupid's pipeline on a fresh file.
fn qupid_run(
    rt: &tokio::runtime::Runtime,
    entries: usize,
    sync: Synchronous,
) -> Result<Duration, String> {
    let dir = TempDir::new()?;
    rt.block_on(async {
        let ledger = SqliteLedger::builder(dir.file())
            .synchronous(sync)
            .build()
            .await
            .map_err(|e| format!("cannot open a SqliteLedger in {}: {e}", dir.0.display()))?;
        Ok(qupid_pipeline(ledger, entries).await)
    })
}

/// The SQLite section: `runs` runs of each configuration, alternating.
pub(crate) fn run(side: Side, entries: usize, runs: usize) -> Result<Comparison, String> {
    compare(side, entries, runs, Synchronous::Normal)
}

/// The `sqlite-full` section: as [`run`] with `synchronous = FULL` on both sides, on at most
/// 5,000 entries (the per-entry loop syncs the disk for each).
pub(crate) fn run_full(side: Side, entries: usize, runs: usize) -> Result<Comparison, String> {
    compare(side, entries.min(5_000), runs, Synchronous::Full)
}

fn compare(
    side: Side,
    entries: usize,
    runs: usize,
    sync: Synchronous,
) -> Result<Comparison, String> {
    let rt = runtime();
    let mut r = Runs::new(3);
    for _ in 0..runs {
        if side.raw() {
            r.push(0, entries, raw_run(entries, 1, sync)?);
            r.push(1, entries, raw_run(entries, BATCH, sync)?);
        }
        if side.qupid() {
            r.push(2, entries, qupid_run(&rt, entries, sync)?);
        }
    }
    let full = matches!(sync, Synchronous::Full);
    let labels = [
        ("(a)", "raw rusqlite, one transaction per entry", 20.0),
        ("(b)", "raw rusqlite, 1,000 entries per transaction", 0.5),
    ];
    let baselines = r.baselines(&labels);
    Ok(Comparison {
        ledger: if full { "sqlite-full" } else { "sqlite" },
        setup: vec![format!(
            "SQLite {} (bundled), WAL, synchronous = {} on both sides, a fresh file in {} per \
             run; raw loop: INSERT OR IGNORE to claim, UPDATE to running, UPDATE to completed",
            rusqlite::version(),
            if full { "FULL" } else { "NORMAL" },
            std::env::temp_dir().display()
        )],
        entries,
        runs,
        baselines,
        qupid: r
            .rate(2)
            .map(|rate| ("qupid `Pipeline` + `SqliteLedger`".to_owned(), rate)),
    })
}
