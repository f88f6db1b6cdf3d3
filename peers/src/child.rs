//! A child process: one configuration, one run, its outcome as one JSON line on stdout.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::tally::{peak_rss_kib, workload, Outcome, Tally};
use crate::{apalis_runs, floor, qupid_runs, Conf, Store};

/// Says what is wrong with the child's command line and exits with status 2.
fn bad(what: &str) -> ! {
    eprintln!("qupid-peers --child: {what}");
    std::process::exit(2);
}

/// `--child CONF --entries N --workers W --retained K --limit SECS`. Never returns: exits
/// once the outcome is printed, without waiting for stray tasks of the run.
pub fn main(args: &[String]) -> ! {
    let conf = args
        .first()
        .and_then(|s| Conf::parse(s))
        .unwrap_or_else(|| bad("expected a configuration name"));
    let mut entries = 0;
    let mut workers = 64;
    let mut retained = 0;
    let mut limit = 120;
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let value: usize = it
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| bad(&format!("{flag} needs a number")));
        match flag.as_str() {
            "--entries" => entries = value,
            "--workers" => workers = value.max(1),
            "--retained" => retained = value,
            "--limit" => limit = value as u64,
            _ => bad(&format!("unknown flag {flag}")),
        }
    }
    if entries == 0 {
        bad("--entries must be at least 1");
    }
    let limit = Duration::from_secs(limit);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let work = workload(entries);
    let outcome = runtime.block_on(async move {
        match conf {
            Conf::Floor => {
                let tally = Arc::new(Tally::new(entries));
                let run = floor::run(tally.clone(), work, workers);
                match tokio::time::timeout(limit, run).await {
                    Ok(d) => Ok(tally.outcome(entries, d, None)),
                    Err(_) => Ok(tally.outcome(entries, limit, Some("timed out".to_owned()))),
                }
            }
            Conf::Qupid(store) => qupid_runs::run(store, work, workers, retained, limit).await,
            Conf::Apalis(store) => apalis_runs::run(store, false, work, workers, limit).await,
            Conf::ApalisRedisTtl => {
                apalis_runs::run(Store::Redis, true, work, workers, limit).await
            }
        }
    });
    let outcome = outcome.unwrap_or_else(|why| Outcome {
        entries,
        secs: 0.0,
        processed: 0,
        twice: 0,
        max: 0,
        missing: 0,
        rss_kib: peak_rss_kib(),
        error: Some(why),
    });
    let line = serde_json::to_string(&outcome).expect("outcome as json");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    std::process::exit(0);
}
