//! What the scenarios share: starting children, reading their logs, checking outputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::children;

/// The settings of a pipeline worker child.
pub(crate) struct Worker<'a> {
    pub(crate) ledger: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) records: usize,
    pub(crate) out: &'a Path,
    pub(crate) log: PathBuf,
    pub(crate) work_ms: u64,
    pub(crate) mode: Mode,
}

/// How a worker child polls and stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Polls the records without output, a page at a time; stops when all have one.
    Pages,
    /// Polls every record every time (an API that cannot tell what was handled) and stops
    /// when drained: everything it returns is finished in the ledger.
    Drain,
    /// Polls every record every time and stops on SIGINT or SIGTERM; prints its report.
    Signals,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Pages => "pages",
            Mode::Drain => "drain",
            Mode::Signals => "signals",
        }
    }
}

impl Worker<'_> {
    pub(crate) fn spawn(&self) -> Result<Child, String> {
        self.command()?
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))
    }

    /// Like [`spawn`](Worker::spawn), with the child's standard output piped to the caller.
    pub(crate) fn spawn_piped(&self) -> Result<Child, String> {
        self.command()?
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))
    }

    fn command(&self) -> Result<Command, String> {
        let mut command = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
        command
            .env(children::ROLE, "worker")
            .env("QUPID_TEST_LEDGER", self.ledger)
            .env("QUPID_TEST_NAMESPACE", self.namespace)
            .env("QUPID_TEST_RECORDS", self.records.to_string())
            .env("QUPID_TEST_OUT", self.out)
            .env("QUPID_TEST_LOG", &self.log)
            .env("QUPID_TEST_WORK_MS", self.work_ms.to_string())
            .env("QUPID_TEST_MODE", self.mode.as_str())
            .stdin(Stdio::null());
        Ok(command)
    }
}

/// What the workers' logs say: per record, how many attempts were started, and the token of
/// each start, per log file.
#[derive(Default)]
pub(crate) struct Logs {
    pub(crate) starts: HashMap<usize, u32>,
    pub(crate) started_by: HashMap<PathBuf, Vec<(usize, u64)>>,
    /// Attempts the workers abandoned before their save because their lease ran out by
    /// their own clock (a renewal late on a loaded machine): each is released and started
    /// again, so it is one more start than the records need.
    pub(crate) expired: u64,
}

impl Logs {
    pub(crate) fn read(paths: &[PathBuf]) -> Result<Logs, String> {
        let mut logs = Logs::default();
        for p in paths {
            let Ok(text) = std::fs::read_to_string(p) else {
                continue;
            };
            let mine = logs.started_by.entry(p.clone()).or_default();
            for line in text.lines() {
                let mut w = line.split_whitespace();
                let first = w.next();
                if first == Some("expired") {
                    logs.expired += w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                    continue;
                }
                if first == Some("start") {
                    let id: usize = w
                        .next()
                        .and_then(|s| s.parse().ok())
                        .ok_or(format!("bad log line {line:?}"))?;
                    let token: u64 = w
                        .next()
                        .and_then(|s| s.parse().ok())
                        .ok_or(format!("bad log line {line:?}"))?;
                    *logs.starts.entry(id).or_default() += 1;
                    mine.push((id, token));
                }
            }
        }
        Ok(logs)
    }

    /// Starts beyond the first, over all records.
    pub(crate) fn repeats(&self) -> u64 {
        self.starts
            .values()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum()
    }

    pub(crate) fn total(&self) -> u64 {
        self.starts.values().map(|&n| u64::from(n)).sum()
    }
}

/// The output file of record `i`.
pub(crate) fn output(out: &Path, i: usize) -> PathBuf {
    out.join(format!("rec-{i:05}"))
}

/// Records with no output file.
pub(crate) fn missing(out: &Path, records: usize) -> usize {
    (0..records).filter(|&i| !output(out, i).exists()).count()
}

/// Sends `signal` (a `kill` name: TERM, KILL, STOP, CONT) to process `pid`.
pub(crate) fn signal(pid: u32, signal: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    check(status.success(), || {
        format!("kill -{signal} {pid} failed: {status}")
    })
}

/// Waits for `child`, failing after `secs` seconds.
pub(crate) fn wait(child: &mut Child, secs: u64, what: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => return Err(format!("{what} failed: {status}")),
            None if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                return Err(format!("{what} did not finish within {secs}s"));
            }
            None => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

pub(crate) fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}
