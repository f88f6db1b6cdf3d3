//! End to end: copies of the `api_to_s3` example poll an HTTP API (served here) and save to S3
//! (moto), sharing a Redis or PostgreSQL ledger, while the test bumps record versions, serves
//! stale pages from a lagging replica, and SIGKILLs one copy or SIGSTOPs one past its lease
//! with writes still on their way. Then it reads every version of every object from S3: every
//! key's current object is the API's latest version, no object was ever written over a newer
//! one, nothing is lost.
//!
//! This binary is its own harness (`harness = false`). It runs the example binary that
//! `cargo test` builds next to it (`target/<profile>/examples/api_to_s3`); build that first
//! when running this test alone. S3 is QUPID_TEST_S3 (a moto server), or a `moto_server` it
//! starts itself. Pass a word to run only the scenarios whose name contains it.
#![cfg(all(feature = "object-store", feature = "redis"))]

mod api;
mod run;
mod s3;

use std::time::Instant;

use run::{Disturb, Spec};

#[allow(unreachable_pub)]
#[path = "../redis_support/mod.rs"]
mod redis_support;

#[cfg(feature = "postgres")]
#[allow(unreachable_pub)]
#[path = "../postgres_support/mod.rs"]
mod postgres_support;

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    #[allow(unused_mut)]
    let mut specs = vec![
        Spec {
            name: "redis_three_copies_one_sigkilled",
            ledger: redis_support::url(),
            namespace: redis_support::namespace("s3kill"),
            processes: 3,
            disturb: Disturb::Kill,
        },
        Spec {
            name: "redis_a_copy_paused_past_its_lease_with_writes_in_flight",
            ledger: redis_support::url(),
            namespace: redis_support::namespace("s3pause"),
            processes: 2,
            disturb: Disturb::Pause,
        },
    ];
    #[cfg(feature = "postgres")]
    specs.push(Spec {
        name: "postgres_a_copy_paused_past_its_lease_with_writes_in_flight",
        ledger: postgres_support::url(),
        namespace: postgres_support::namespace("s3pause"),
        processes: 2,
        disturb: Disturb::Pause,
    });
    specs.retain(|s| filter.is_empty() || filter.iter().any(|f| s.name.contains(f.as_str())));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let s3 = match rt.block_on(s3::S3::start()) {
        Ok(s3) => s3,
        Err(e) => {
            eprintln!("{e}");
            println!("\ntest result: FAILED. 0 passed; 1 failed");
            std::process::exit(1);
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for spec in specs {
        let started = Instant::now();
        eprintln!("test {} ...", spec.name);
        match rt.block_on(run::run(&s3, &spec)) {
            Ok(summary) => {
                passed += 1;
                eprintln!("  {summary}");
                eprintln!("test {} ... ok ({:.1?})", spec.name, started.elapsed());
                cleanup(&spec);
            }
            Err(why) => {
                failed += 1;
                eprintln!(
                    "test {} ... FAILED ({:.1?})\n{why}",
                    spec.name,
                    started.elapsed()
                );
            }
        }
    }
    drop(s3);
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

/// Deletes a passed run's namespace (a failed run keeps it for inspection).
fn cleanup(spec: &Spec) {
    if spec.ledger.starts_with("redis") {
        let _ = redis_support::delete_namespace(&spec.ledger, &spec.namespace);
    }
    #[cfg(feature = "postgres")]
    if spec.ledger.starts_with("postgres") {
        let _ = postgres_support::drop_namespace(&spec.ledger, &spec.namespace);
    }
}
