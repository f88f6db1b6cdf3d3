//! SQLite across processes: two processes on one file, unprivileged users, and SIGKILL.

use qupid::LedgerAdmin;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use qupid::ledger::{ListQuery, SqliteLedger, State};

use crate::children::{ACCEPTED, READY, ROLE};
use crate::support::{check, missing, runtime, signal, wait, Logs, Mode, Worker};
use crate::Outcome;

fn tempdir() -> Result<tempfile::TempDir, String> {
    tempfile::tempdir().map_err(|e| e.to_string())
}

/// Two processes open one new file and offer the same 2,000 keys at once: each key is
/// accepted exactly once.
pub(crate) fn two_processes_accept_each_key_once() -> Outcome {
    let dir = tempdir()?;
    let path = dir.path().join("ledger.db");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = Vec::new();
    for order in 0..2 {
        let child = Command::new(&exe)
            .env(ROLE, "sqlite-offer")
            .env("QUPID_TEST_LEDGER", &path)
            .env("QUPID_TEST_ORDER", order.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start a child: {e}"))?;
        children.push(child);
    }
    // Both open the file, then start offering together.
    let mut outputs = Vec::new();
    for child in &mut children {
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        while !line.contains(READY) {
            line.clear();
            if out.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("a child ended before it was ready".into());
            }
        }
        outputs.push(out);
    }
    for child in &mut children {
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(b"go\n")
            .map_err(|e| e.to_string())?;
    }
    let mut count = vec![0u32; 2000];
    let mut won = [0; 2];
    for (n, out) in outputs.into_iter().enumerate() {
        for line in out.lines() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(i) = line.strip_prefix(ACCEPTED) {
                count[i.trim().parse::<usize>().map_err(|e| e.to_string())?] += 1;
                won[n] += 1;
            }
        }
    }
    for (n, child) in children.iter_mut().enumerate() {
        wait(child, 60, &format!("child {n}"))?;
    }
    let wrong: Vec<_> = count
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 1)
        .take(5)
        .collect();
    eprintln!("  keys won by each process: {won:?}");
    check(wrong.is_empty(), || {
        format!("keys accepted other than once (key, count): {wrong:?}")
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn chmod(path: &Path, mode: u32) -> Outcome {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Opens `path` as a process that may not write it: this binary copied where anyone may run
/// it, run as user 65534 (nobody) when this process is root (for whom permissions do not make
/// a file read-only), as itself otherwise.
fn open_unprivileged(path: &Path) -> Outcome {
    let exe_dir = tempdir()?;
    chmod(exe_dir.path(), 0o755)?;
    let exe = exe_dir.path().join("child");
    std::fs::copy(std::env::current_exe().map_err(|e| e.to_string())?, &exe)
        .map_err(|e| e.to_string())?;
    chmod(&exe, 0o755)?;
    let mut cmd = Command::new(&exe);
    cmd.env(ROLE, "sqlite-unwritable")
        .env("QUPID_TEST_LEDGER", path);
    if is_root() {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("start the unprivileged child: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    check(
        out.status.success() && text.contains("refused as expected"),
        || format!("the unprivileged open should be refused clearly:\n{text}"),
    )
}

fn create(path: &Path) -> Outcome {
    runtime().block_on(async {
        SqliteLedger::open(path)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

/// A ledger file the process may not write is refused with a clear error.
pub(crate) fn read_only_file_is_refused() -> Outcome {
    let dir = tempdir()?;
    let path = dir.path().join("ledger.db");
    create(&path)?;
    chmod(&path, 0o444)?;
    // The unprivileged user may use the directory, not write the file.
    chmod(dir.path(), 0o777)?;
    open_unprivileged(&path)
}

/// A ledger in a directory the process may not write is refused: a new file cannot be
/// created, and an existing one cannot get its WAL files.
pub(crate) fn read_only_directory_is_refused() -> Outcome {
    let dir = tempdir()?;
    let path = dir.path().join("ledger.db");
    chmod(dir.path(), 0o555)?;
    open_unprivileged(&path)?;
    chmod(dir.path(), 0o755)?;
    create(&path)?;
    chmod(&path, 0o666)?;
    chmod(dir.path(), 0o555)?;
    let result = open_unprivileged(&path);
    chmod(dir.path(), 0o755)?;
    result
}

/// Runs a pipeline over 20,000 records on a SQLite ledger, kills it with SIGKILL at random
/// moments (at least 10 times), restarts it until done, and checks: nothing lost, every
/// record saved, records processed more than once ≤ attempts running at the kills, and no
/// record completed before a kill is processed after it.
pub(crate) fn pipeline_survives_sigkill() -> Outcome {
    const RECORDS: usize = 20_000;
    let dir = tempdir()?;
    let db = dir.path().join("ledger.db");
    let url = format!("sqlite://{}", db.display());
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let rt = runtime();
    let (mut kills, mut running_at_kills) = (0u64, 0u64);
    // Per run: the records completed when it was killed.
    let mut completed_at_kill: Vec<HashSet<String>> = Vec::new();
    let mut logs: Vec<PathBuf> = Vec::new();
    loop {
        let log = dir.path().join(format!("run-{}.log", logs.len()));
        logs.push(log.clone());
        let worker = Worker {
            ledger: &url,
            namespace: "crash",
            records: RECORDS,
            out: &out,
            log,
            work_ms: 8,
            mode: Mode::Pages,
        };
        let mut child = worker.spawn()?;
        // Kills come early and often: at least 10 before the work can be done.
        let alive = Duration::from_millis(fastrand::u64(150..700));
        std::thread::sleep(alive);
        // Twelve kills, then the run that finishes.
        if child.try_wait().map_err(|e| e.to_string())?.is_some() || kills >= 12 {
            wait(&mut child, 120, "the last run")?;
            break;
        }
        child.kill().map_err(|e| e.to_string())?; // SIGKILL
        child.wait().map_err(|e| e.to_string())?;
        kills += 1;
        let mine = Logs::read(std::slice::from_ref(&logs[logs.len() - 1]))?;
        let mine = mine.started_by.values().next().cloned().unwrap_or_default();
        let (running, completed) = rt.block_on(inspect(&url, &mine))?;
        running_at_kills += running;
        completed_at_kill.push(completed);
        if kills > 60 {
            return Err(format!(
                "not done after {kills} kills; {} records missing",
                missing(&out, RECORDS)
            ));
        }
    }
    let lost = missing(&out, RECORDS);
    let read = Logs::read(&logs)?;
    // A record completed before kill k must not be started by any later run.
    let mut reprocessed_completed = 0;
    for (k, done) in completed_at_kill.iter().enumerate() {
        for later in &logs[k + 1..] {
            for (id, _) in read.started_by.get(later).map(Vec::as_slice).unwrap_or(&[]) {
                if done.contains(&format!("rec/{id:05}")) {
                    reprocessed_completed += 1;
                }
            }
        }
    }
    let repeats = read.repeats();
    eprintln!(
        "  {RECORDS} records, {kills} SIGKILLs, {running_at_kills} attempts running at the kills, \
         {repeats} records processed more than once, {lost} lost, {reprocessed_completed} completed records processed again"
    );
    check(kills >= 10, || format!("only {kills} kills"))?;
    check(lost == 0, || format!("{lost} records were never saved"))?;
    check(read.starts.len() == RECORDS, || {
        format!("{} records were started", read.starts.len())
    })?;
    check(repeats <= running_at_kills + read.expired, || {
        format!(
            "{repeats} repeats, more than the {running_at_kills} attempts running at the kills \
             and the {} abandoned on an expired lease",
            read.expired
        )
    })?;
    check(reprocessed_completed == 0, || {
        format!("{reprocessed_completed} completed records were processed again")
    })
}

/// After a kill: how many of the attempts the dead run started are still Running under its
/// token (the attempts in flight at the kill), and which keys are Completed.
async fn inspect(url: &str, started: &[(usize, u64)]) -> Result<(u64, HashSet<String>), String> {
    let running = crate::shared::still_running(url, "crash", started).await?;
    let l = qupid::ledger::AnyLedger::open(url, "crash")
        .await
        .map_err(|e| e.to_string())?;
    let mut completed = HashSet::new();
    let mut q = ListQuery::new(State::Completed).limit(5000);
    loop {
        let page = l.list(&q).await.map_err(|e| e.to_string())?;
        completed.extend(page.records.into_iter().map(|r| r.key.as_str().to_owned()));
        match page.next {
            Some(k) => q = q.after(k),
            None => break,
        }
    }
    Ok((running, completed))
}

/// SIGTERM (what systemd, Docker and Kubernetes send) mid-run: the pipeline drains like on
/// Ctrl-C, prints its report, exits 0, and leaves no key Queued or Running in the ledger.
pub(crate) fn sigterm_drains_and_exits_cleanly() -> Outcome {
    const RECORDS: usize = 5_000;
    let dir = tempdir()?;
    let db = dir.path().join("ledger.db");
    let url = format!("sqlite://{}", db.display());
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let worker = Worker {
        ledger: &url,
        namespace: "sigterm",
        records: RECORDS,
        out: &out,
        log: dir.path().join("run.log"),
        work_ms: 20,
        mode: Mode::Signals,
    };
    let mut child = worker.spawn_piped()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while missing(&out, RECORDS) > RECORDS - 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(child.id(), "TERM")?;
    let status = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return Err("the worker did not stop within 30 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stdout).map_err(|e| e.to_string())?;
    }
    check(status.success(), || {
        format!("exit status {status} after SIGTERM, expected 0")
    })?;
    let completed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix(crate::children::REPORT))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no report printed: {stdout:?}"))?;
    let saved = RECORDS - missing(&out, RECORDS);
    let stats = rt_stats(&url)?;
    eprintln!(
        "  SIGTERM after {saved} of {RECORDS} saved: exit 0, report says {completed} completed; \
         ledger: {} completed, {} queued, {} running",
        stats.completed, stats.queued, stats.running
    );
    check(saved < RECORDS, || {
        "the run finished before the signal".into()
    })?;
    check(stats.queued + stats.running == 0, || {
        format!(
            "{} queued and {} running keys left behind",
            stats.queued, stats.running
        )
    })?;
    check(stats.completed == completed, || {
        format!(
            "the ledger has {} completed, the report {completed}",
            stats.completed
        )
    })
}

fn rt_stats(url: &str) -> Result<qupid::ledger::Stats, String> {
    runtime().block_on(async {
        let l = qupid::ledger::AnyLedger::open(url, "sigterm")
            .await
            .map_err(|e| e.to_string())?;
        l.stats().await.map_err(|e| e.to_string())
    })
}
