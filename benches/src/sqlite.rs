//! The SQLite section: qupid's pipeline over a [`SqliteLedger`] against a raw rusqlite loop
//! making the same state changes with the fewest statements.
//!
//! The raw loop keeps one table of key → state (`WITHOUT ROWID`, no other index) and, for
//! each entry, claims the key (`INSERT OR IGNORE`; a key already there is a duplicate and is
//! skipped), marks it running, then completed: three statements, prepared once. It commits
//! (a) after every entry, or (b) after every 1,000 entries. Both sides use a fresh file per
//! run in WAL mode with `synchronous = NORMAL` (qupid's default).
//!
//! A third loop, (c), shown for comparison only (no target), runs the ledger's own statements
//! on the ledger's own schema, grouped as the ledger groups them, with no pipeline around
//! them: the gap between it and qupid is the pipeline's; the gap between it and (b) is the
//! row and the indexes the ledger keeps (for `list`, `stats` and `purge`).
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
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Result<TempDir, String> {
        let dir = std::env::temp_dir().join(fresh_name("qupid_bench_sqlite"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
    pub(crate) fn file(&self) -> PathBuf {
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

/// Entries per transaction in loop (c): about what the ledger's writer groups in this
/// benchmark (its groups hold about 260 transitions: offers and completions of some 130
/// entries).
const LEDGER_GROUP: usize = 128;

/// Loop (c): the ledger's own statements on the ledger's own schema, in a bare rusqlite loop
/// over a file a [`SqliteLedger`] created (then closed). Per transaction, the offers of one
/// chunk of entries (the ledger's insert of a fresh Running row; a key already there is
/// read back, as the ledger reads it, and skipped) and the completions of the previous
/// chunk's keys (its guarded update), then the token counter. What is left between this and
/// qupid's pipeline is the pipeline and the ledger's threads, not SQLite's work.
fn raw_on_ledger_schema(path: &Path, work: &[(String, u64)]) -> rusqlite::Result<(Duration, u64)> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let mut insert = conn.prepare(
        "INSERT INTO qupid_entries (key, state, superseded, attempts, abandoned, token, at,
           version, newer, error)
         VALUES (?1, 1, 0, 1, 0, ?2, ?3, NULL, NULL, NULL) ON CONFLICT (key) DO NOTHING",
    )?;
    let mut load = conn.prepare(
        "SELECT state, superseded, attempts, abandoned, token, at, version, newer, error
         FROM qupid_entries WHERE key = ?1",
    )?;
    let mut complete = conn.prepare(
        "UPDATE qupid_entries SET superseded = 0, at = ?3, state = 2
         WHERE key = ?1 AND token = ?2 AND state = 1 AND newer IS NULL",
    )?;
    let mut tokens = conn.prepare("UPDATE qupid_meta SET value = ?1 WHERE name = 'last_token'")?;
    let (mut begin, mut commit) = (conn.prepare("BEGIN IMMEDIATE")?, conn.prepare("COMMIT")?);
    let start = Instant::now();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let (mut token, mut done) = (0i64, 0u64);
    let mut running: Vec<(&str, i64)> = Vec::new();
    for chunk in work.chunks(LEDGER_GROUP) {
        begin.execute([])?;
        let lease_until = now() + 30_000;
        let mut accepted = Vec::with_capacity(chunk.len());
        for (key, v) in chunk {
            if insert.execute(rusqlite::params![key.as_bytes(), token + 1, lease_until])? > 0 {
                token += 1;
                accepted.push((key.as_str(), token));
            } else {
                // A duplicate: the ledger reads the row to decide.
                load.query_row([key.as_bytes()], |r| r.get::<_, i64>(0))?;
            }
            std::hint::black_box(v); // the no-op work and save
        }
        let at = now();
        for (key, t) in running.drain(..) {
            done += complete.execute(rusqlite::params![key.as_bytes(), t, at])? as u64;
        }
        tokens.execute([token])?;
        commit.execute([])?;
        running = accepted;
    }
    begin.execute([])?;
    let at = now();
    for (key, t) in running.drain(..) {
        done += complete.execute(rusqlite::params![key.as_bytes(), t, at])? as u64;
    }
    commit.execute([])?;
    Ok((start.elapsed(), done))
}

/// One run of loop (c) on a fresh file, created by a [`SqliteLedger`].
fn raw_on_ledger_schema_run(
    rt: &tokio::runtime::Runtime,
    entries: usize,
) -> Result<Duration, String> {
    let dir = TempDir::new()?;
    rt.block_on(async {
        let ledger = SqliteLedger::builder(dir.file())
            .open()
            .await
            .map_err(|e| format!("cannot open a SqliteLedger in {}: {e}", dir.0.display()))?;
        drop(ledger);
        Ok::<_, String>(())
    })?;
    let work = workload(entries);
    let (d, done) = raw_on_ledger_schema(&dir.file(), &work)
        .map_err(|e| format!("raw rusqlite on the ledger's schema: {e}"))?;
    assert_eq!(
        done,
        unique(entries) as u64,
        "loop (c) completed each unique key once"
    );
    Ok(d)
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
            .open()
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
    let full = matches!(sync, Synchronous::Full);
    let mut r = Runs::new(4);
    for _ in 0..runs {
        if side.raw() {
            r.push(0, entries, raw_run(entries, 1, sync)?);
            r.push(1, entries, raw_run(entries, BATCH, sync)?);
            if !full {
                r.push(2, entries, raw_on_ledger_schema_run(&rt, entries)?);
            }
        }
        if side.qupid() {
            r.push(3, entries, qupid_run(&rt, entries, sync)?);
        }
    }
    let labels = [
        ("(a)", "raw rusqlite, one transaction per entry", Some(20.0)),
        (
            "(b)",
            "raw rusqlite, 1,000 entries per transaction",
            Some(0.5),
        ),
        (
            "(c)",
            "raw rusqlite on the ledger's schema with its statements, 128 entries per transaction",
            None,
        ),
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
            .rate(3)
            .map(|rate| ("qupid `Pipeline` + `SqliteLedger`".to_owned(), rate)),
    })
}
