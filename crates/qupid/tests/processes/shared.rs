//! Shared ledgers across processes: four processes on one namespace, and one of them killed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use qupid::ledger::AnyLedger;
use qupid::{LedgerAdmin, State};

use crate::support::{check, missing, runtime, signal, wait, Logs, Mode, Worker};
use crate::Outcome;

#[allow(unreachable_pub)]
#[path = "../redis_support/mod.rs"]
mod redis_support;

#[cfg(feature = "postgres")]
#[allow(unreachable_pub)]
#[path = "../postgres_support/mod.rs"]
mod postgres_support;

const RECORDS: usize = 20_000;
const PROCESSES: usize = 4;

pub(crate) fn redis_four_processes() -> Outcome {
    let url = redis_support::url();
    let ns = redis_support::namespace("procs");
    let result = four_processes(&url, &ns, false);
    if result.is_ok() {
        let _ = redis_support::delete_namespace(&url, &ns);
    }
    result
}

pub(crate) fn redis_one_killed() -> Outcome {
    let url = redis_support::url();
    let ns = redis_support::namespace("killed");
    let result = four_processes(&url, &ns, true);
    if result.is_ok() {
        let _ = redis_support::delete_namespace(&url, &ns);
    }
    result
}

#[cfg(feature = "postgres")]
pub(crate) fn postgres_four_processes() -> Outcome {
    let url = postgres_support::url();
    let ns = postgres_support::namespace("procs");
    let result = four_processes(&url, &ns, false);
    if result.is_ok() {
        let _ = postgres_support::drop_namespace(&url, &ns);
    }
    result
}

#[cfg(feature = "postgres")]
pub(crate) fn postgres_one_killed() -> Outcome {
    let url = postgres_support::url();
    let ns = postgres_support::namespace("killed");
    let result = four_processes(&url, &ns, true);
    if result.is_ok() {
        let _ = postgres_support::drop_namespace(&url, &ns);
    }
    result
}

/// Four worker processes poll the same 20,000 records on one namespace. Without a kill, the
/// records are processed exactly 20,000 times in all. With the first worker SIGKILLed
/// mid-run, every record is still saved, and the records processed twice are at most the
/// attempts that worker had running.
pub(crate) fn four_processes(url: &str, ns: &str, kill: bool) -> Outcome {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let logs: Vec<PathBuf> = (0..PROCESSES)
        .map(|i| dir.path().join(format!("worker-{i}.log")))
        .collect();
    let mut children = Vec::new();
    for log in &logs {
        let w = Worker {
            ledger: url,
            namespace: ns,
            records: RECORDS,
            out: &out,
            log: log.clone(),
            work_ms: 2,
            mode: Mode::Pages,
        };
        children.push(w.spawn()?);
    }
    let mut running_at_kill = 0;
    if kill {
        // Connected beforehand, so that what was Running is read right after the kill, well
        // within the dead process's 1 s leases (before the others can take its keys over).
        let rt = runtime();
        let ledger = rt
            .block_on(AnyLedger::open(url, ns))
            .map_err(|e| e.to_string())?;
        // Let it get going, then kill it mid-run.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while missing(&out, RECORDS) > RECORDS * 2 / 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        children[0].kill().map_err(|e| e.to_string())?;
        children[0].wait().map_err(|e| e.to_string())?;
        let running = rt.block_on(running_tokens(&ledger))?;
        // What it held: keys it started that are still Running under its token.
        let started = Logs::read(&logs[..1])?;
        let mine = started
            .started_by
            .get(&logs[0])
            .cloned()
            .unwrap_or_default();
        running_at_kill = held(&mine, &running);
    }
    for (i, child) in children.iter_mut().enumerate().skip(usize::from(kill)) {
        wait(child, 180, &format!("worker {i}"))?;
    }
    let lost = missing(&out, RECORDS);
    let read = Logs::read(&logs)?;
    let per_worker: Vec<usize> = logs
        .iter()
        .map(|l| read.started_by.get(l).map_or(0, Vec::len))
        .collect();
    eprintln!(
        "  {PROCESSES} processes, {RECORDS} records: {} attempts started ({per_worker:?} per process), \
         {} records processed more than once, {} attempts abandoned on an expired lease, \
         {lost} lost{}",
        read.total(),
        read.repeats(),
        read.expired,
        if kill { format!(", {running_at_kill} running in the killed process") } else { String::new() }
    );
    check(lost == 0, || format!("{lost} records were never saved"))?;
    if kill {
        check(read.repeats() <= running_at_kill + read.expired, || {
            format!(
                "{} repeats, more than the {running_at_kill} attempts the killed process had \
                 running and the {} attempts abandoned on an expired lease",
                read.repeats(),
                read.expired
            )
        })
    } else {
        check(read.total() == RECORDS as u64 + read.expired, || {
            format!(
                "{} attempts for {RECORDS} records ({} abandoned on an expired lease): some \
                 record was processed twice",
                read.total(),
                read.expired
            )
        })?;
        check(per_worker.iter().filter(|&&n| n > 0).count() > 1, || {
            format!("only one process did any work: {per_worker:?}")
        })
    }
}

/// How many of `started` (record, token) are still Running under that token. Reads the
/// Running records a page at a time (a few calls), so the answer is taken well within the
/// dead process's leases, before anyone can take its keys over.
pub(crate) async fn still_running(
    url: &str,
    ns: &str,
    started: &[(usize, u64)],
) -> Result<u64, String> {
    let l = AnyLedger::open(url, ns).await.map_err(|e| e.to_string())?;
    Ok(held(started, &running_tokens(&l).await?))
}

/// The token of every Running record, by key, read a page at a time.
pub(crate) async fn running_tokens(l: &AnyLedger) -> Result<HashMap<String, u64>, String> {
    let mut running = HashMap::new();
    let mut q = qupid::ledger::ListQuery::new(State::Running).limit(5000);
    loop {
        let page = l.list(&q).await.map_err(|e| e.to_string())?;
        running.extend(
            page.records
                .into_iter()
                .map(|r| (r.key.as_str().to_owned(), r.token.get())),
        );
        match page.next {
            Some(k) => q = q.after(k),
            None => break,
        }
    }
    Ok(running)
}

/// How many of `started` (record, token) are in `running` under that token.
fn held(started: &[(usize, u64)], running: &HashMap<String, u64>) -> u64 {
    started
        .iter()
        .filter(|(id, token)| running.get(&format!("rec/{id:05}")) == Some(token))
        .count() as u64
}

pub(crate) fn redis_drained_despite_a_kill() -> Outcome {
    let url = redis_support::url();
    let ns = redis_support::namespace("drain");
    let result = drained_despite_a_kill(&url, &ns);
    if result.is_ok() {
        let _ = redis_support::delete_namespace(&url, &ns);
    }
    result
}

#[cfg(feature = "postgres")]
pub(crate) fn postgres_drained_despite_a_kill() -> Outcome {
    let url = postgres_support::url();
    let ns = postgres_support::namespace("drain");
    let result = drained_despite_a_kill(&url, &ns);
    if result.is_ok() {
        let _ = postgres_support::drop_namespace(&url, &ns);
    }
    result
}

/// A batch job on several machines: 2, 3, then 4 processes poll the same 1,500 records
/// (every record at every poll) with `stop_when_drained`, and one of them is SIGKILLed
/// mid-run. Every other process exits by itself, with status 0, and every record is saved:
/// the keys the killed one held are taken over once their leases expire.
fn drained_despite_a_kill(url: &str, ns: &str) -> Outcome {
    const RECORDS: usize = 1_500;
    for (run, processes) in [2usize, 3, 4].into_iter().enumerate() {
        let ns = format!("{ns}{run}");
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        let mut children = Vec::new();
        for i in 0..processes {
            let w = Worker {
                ledger: url,
                namespace: &ns,
                records: RECORDS,
                out: &out,
                log: dir.path().join(format!("worker-{i}.log")),
                work_ms: 5,
                mode: Mode::Drain,
            };
            children.push(w.spawn()?);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while missing(&out, RECORDS) > RECORDS * 3 / 4 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(children[0].id(), "KILL")?;
        children[0].wait().map_err(|e| e.to_string())?;
        let killed_at = RECORDS - missing(&out, RECORDS);
        for (i, child) in children.iter_mut().enumerate().skip(1) {
            wait(
                child,
                120,
                &format!("run {run}: worker {i} (of {processes})"),
            )?;
        }
        let lost = missing(&out, RECORDS);
        eprintln!(
            "  run {run}: {processes} processes, one killed after {killed_at} of {RECORDS} \
             saved; the others exited by themselves; {lost} lost"
        );
        check(lost == 0, || {
            format!("run {run}: {lost} records were never saved")
        })?;
    }
    Ok(())
}
