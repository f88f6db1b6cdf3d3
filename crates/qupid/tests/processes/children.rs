//! The child roles: what a copy of this binary does when started with [`ROLE`] set.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qupid::ledger::{AnyLedger, Offered, SqliteLedger};
use qupid::{Entry, Key, Ledger, Offer, Pipeline, Policy, Source};
use tokio_util::sync::CancellationToken;

use crate::support::output;

/// The variable that makes this binary a child, naming its role.
pub(crate) const ROLE: &str = "QUPID_CHILD";
/// What a child that offers keys prints once its ledger is open.
pub(crate) const READY: &str = "@ready";
/// What a worker prints when it stops by itself, before the keys it completed.
pub(crate) const REPORT: &str = "@completed ";
/// What it prints before each key index it won.
pub(crate) const ACCEPTED: &str = "@accepted ";

/// Runs `role`; answers the exit code.
pub(crate) fn run(role: &str) -> i32 {
    let rt = crate::support::runtime();
    let result = match role {
        "worker" => rt.block_on(worker()),
        "sqlite-offer" => rt.block_on(sqlite_offer()),
        "sqlite-unwritable" => rt.block_on(sqlite_unwritable()),
        other => Err(format!("unknown child role {other:?}")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("child {role}: {e}");
            1
        }
    }
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

/// A pipeline worker over records `0..QUPID_TEST_RECORDS`: "processes" each for a few
/// milliseconds, saves its output file, and logs every start. How it polls and stops is
/// `QUPID_TEST_MODE` (see `support::Mode`).
async fn worker() -> Result<(), String> {
    let ledger = AnyLedger::open(&var("QUPID_TEST_LEDGER")?, &var("QUPID_TEST_NAMESPACE")?)
        .await
        .map_err(|e| e.to_string())?;
    let records: usize = var("QUPID_TEST_RECORDS")?
        .parse()
        .map_err(|_| "bad QUPID_TEST_RECORDS")?;
    let work = Duration::from_millis(
        var("QUPID_TEST_WORK_MS")?
            .parse()
            .map_err(|_| "bad QUPID_TEST_WORK_MS")?,
    );
    let out = PathBuf::from(var("QUPID_TEST_OUT")?);
    // Unbuffered: every line is one write, so it survives a SIGKILL.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(var("QUPID_TEST_LOG")?)
        .map_err(|e| e.to_string())?;
    let log = Arc::new(Mutex::new(log));

    let mode = var("QUPID_TEST_MODE")?;
    let stop = CancellationToken::new();
    let saved: Arc<Mutex<HashSet<usize>>> = Arc::default();
    let (poll_out, poll_saved, poll_stop) = (out.clone(), saved.clone(), stop.clone());
    let every_record = Source::poll(Duration::from_millis(50), move || async move {
        Ok::<_, std::io::Error>((0..records).map(|i| Entry::new(format!("rec/{i:05}"), i)))
    });
    let pages = Source::poll(Duration::from_millis(50), move || {
        // The datastore's query: records without output, a page at a time.
        let mut saved = poll_saved.lock().expect("lock");
        let mut page = Vec::new();
        for i in 0..records {
            if saved.contains(&i) {
                continue;
            }
            if output(&poll_out, i).exists() {
                saved.insert(i);
            } else if page.len() < 2000 {
                page.push(i);
            }
        }
        if saved.len() == records {
            poll_stop.cancel();
        }
        let page: Vec<qupid::Result<Entry<usize>>> = page
            .into_iter()
            .map(|i| Entry::new(format!("rec/{i:05}"), i))
            .collect();
        async move { Ok::<_, std::io::Error>(page) }
    });
    let mut policy = Policy::default();
    policy.lease = Duration::from_secs(1);
    policy.crash_cap = 0;
    policy.max_attempts = 20;
    let plog = log.clone();
    let builder = Pipeline::builder(ledger);
    let builder = match mode.as_str() {
        "pages" => builder.source(pages).shutdown(stop),
        "drain" => builder.source(every_record).stop_when_drained(),
        "signals" => builder.source(every_record).stop_on_signals(),
        other => return Err(format!("unknown QUPID_TEST_MODE {other:?}")),
    };
    let report = builder
        .process(move |a| {
            let line = format!("start {} {}\n", a.payload(), a.token());
            let written = plog.lock().expect("lock").write_all(line.as_bytes());
            async move {
                written?;
                tokio::time::sleep(work).await;
                Ok::<_, std::io::Error>(format!("{} {}\n", std::process::id(), a.token()))
            }
        })
        .save(move |a, contents: String| {
            let path = output(&out, *a.payload());
            async move {
                let tmp = path.with_extension("tmp");
                tokio::fs::write(&tmp, contents).await?;
                tokio::fs::rename(&tmp, &path).await
            }
        })
        .policy(policy)
        .concurrency(16)
        .backoff(qupid::Backoff {
            initial: Duration::from_millis(10),
            ..Default::default()
        })
        .build()
        .map_err(|e| e.to_string())?
        .run()
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "worker {}: {}",
        std::process::id(),
        report.to_string().replace('\n', "; ")
    );
    println!("{REPORT}{}", report.completed);
    let line = format!("expired {}\n", report.lease_expired);
    log.lock()
        .expect("lock")
        .write_all(line.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Opens the SQLite ledger `QUPID_TEST_LEDGER`, says it is ready, waits for a line on stdin,
/// then offers keys `key-0..key-1999` in the order of its `QUPID_TEST_ORDER`, printing each
/// key index it won.
async fn sqlite_offer() -> Result<(), String> {
    let l = SqliteLedger::open(var("QUPID_TEST_LEDGER")?)
        .await
        .map_err(|e| e.to_string())?;
    let order: usize = var("QUPID_TEST_ORDER")?
        .parse()
        .map_err(|_| "bad QUPID_TEST_ORDER")?;
    println!("{READY}");
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .map_err(|e| e.to_string())?;
    let keys = 2000;
    let mut ids: Vec<usize> = (0..keys).collect();
    ids.rotate_left(order * keys / 4);
    if order % 2 == 1 {
        ids.reverse();
    }
    let p = Policy::default();
    // Small batches: many transactions, so the two processes' writes interleave.
    for chunk in ids.chunks(4) {
        let batch: Vec<Offer> = chunk
            .iter()
            .map(|i| Key::new(format!("key-{i}")).map(Offer::new))
            .collect::<qupid::Result<_>>()
            .map_err(|e| e.to_string())?;
        let out = l.offer(&p, &batch).await.map_err(|e| e.to_string())?;
        for (o, i) in out.iter().zip(chunk) {
            if let Offered::Accepted(_) = o {
                println!("{ACCEPTED}{i}");
            }
        }
    }
    Ok(())
}

/// Opens `QUPID_TEST_LEDGER`, which this (unprivileged) process may not write, and checks the
/// error is a clear, permanent ledger error naming the file.
async fn sqlite_unwritable() -> Result<(), String> {
    let path = var("QUPID_TEST_LEDGER")?;
    match SqliteLedger::open(&path).await {
        Ok(_) => Err(format!("{path} opened, but it cannot be written")),
        Err(e) => {
            let msg = e.to_string();
            if e.kind() != qupid::ErrorKind::Ledger || e.is_transient() {
                return Err(format!(
                    "expected a permanent ledger error, found {:?}: {msg}",
                    e.kind()
                ));
            }
            if !msg.contains(&path) || !msg.contains("cannot write") {
                return Err(format!(
                    "the error should name {path} and say it cannot write: {msg}"
                ));
            }
            println!("refused as expected: {msg}");
            Ok(())
        }
    }
}
