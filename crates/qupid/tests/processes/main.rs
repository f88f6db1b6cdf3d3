//! Tests that need real OS processes: several processes sharing one ledger, processes killed
//! with SIGKILL mid-run, and processes without root's privileges.
//!
//! This binary is its own harness (`harness = false`): started with `QUPID_CHILD` set, it
//! plays a child role (a pipeline worker, a ledger user) instead of running the scenarios, so
//! the scenarios can start copies of it. Pass a word to run only the scenarios whose name
//! contains it.
#![cfg(all(feature = "sqlite", feature = "redis"))]

mod children;
mod shared;
mod sqlite;
mod support;

use std::time::Instant;

type Outcome = Result<(), String>;

/// A scenario: its name, and the function that runs it.
type Scenario = (&'static str, fn() -> Outcome);

fn main() {
    if let Ok(role) = std::env::var(children::ROLE) {
        std::process::exit(children::run(&role));
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    #[allow(unused_mut)]
    let mut scenarios: Vec<Scenario> = vec![
        (
            "sqlite_two_processes_accept_each_key_once",
            sqlite::two_processes_accept_each_key_once,
        ),
        (
            "sqlite_read_only_file_is_refused",
            sqlite::read_only_file_is_refused,
        ),
        (
            "sqlite_read_only_directory_is_refused",
            sqlite::read_only_directory_is_refused,
        ),
        (
            "sqlite_pipeline_survives_sigkill",
            sqlite::pipeline_survives_sigkill,
        ),
        (
            "redis_four_processes_process_each_record_once",
            shared::redis_four_processes,
        ),
        (
            "redis_a_killed_process_loses_nothing",
            shared::redis_one_killed,
        ),
        (
            "redis_every_instance_stops_when_drained_despite_a_kill",
            shared::redis_drained_despite_a_kill,
        ),
        (
            "sqlite_sigterm_drains_and_exits_cleanly",
            sqlite::sigterm_drains_and_exits_cleanly,
        ),
    ];
    #[cfg(feature = "postgres")]
    scenarios.extend([
        (
            "postgres_four_processes_process_each_record_once",
            shared::postgres_four_processes as fn() -> Outcome,
        ),
        (
            "postgres_a_killed_process_loses_nothing",
            shared::postgres_one_killed,
        ),
        (
            "postgres_every_instance_stops_when_drained_despite_a_kill",
            shared::postgres_drained_despite_a_kill,
        ),
    ]);
    let (mut passed, mut failed) = (0, 0);
    for (name, run) in scenarios {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        eprintln!("test {name} ...");
        match run() {
            Ok(()) => {
                passed += 1;
                eprintln!("test {name} ... ok ({:.1?})", started.elapsed());
            }
            Err(why) => {
                failed += 1;
                eprintln!("test {name} ... FAILED ({:.1?})\n{why}", started.elapsed());
            }
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
