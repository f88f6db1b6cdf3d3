//! The test kit every qupid ledger runs: one conformance suite and one model-based test,
//! both measuring the ledger against the library's rule book,
//! [`qupid::ledger::rules::decide`] (the suite's table of the rules,
//! [`conformance::every_transition_follows_the_rules`], row by row; the model at random).
//!
//! A ledger crate (or a module behind a feature) provides a [`Fixture`] maker — a fresh,
//! empty ledger in its own namespace, and a way to move its clock — and runs everything with
//! two lines:
//!
//! ```text
//! async fn fixture() -> qupid_testkit::Fixture<MyLedger> { /* a fresh namespace */ }
//! qupid_testkit::conformance_tests!(fixture);
//! qupid_testkit::model_test!(fixture, 64);
//! ```
//!
//! A ledger that can hold records it cannot read (every shared or durable one) also gives its
//! fixture a [`Plant`] ([`Fixture::with_plant`]), so that the tests of unreadable records run
//! on it; without one they are skipped with a note.
//!
//! The tests express every duration in *ticks* ([`Fixture::tick`]): a memory ledger on a
//! [`ManualClock`](qupid::clock::ManualClock) uses one virtual second, a server ledger whose
//! clock cannot be moved uses a short real duration and sleeps.

pub mod conformance;
mod fault;
mod fixture;
pub mod model;

pub use fault::FaultyLedger;
pub use fixture::{memory_fixture, Fixture, ManualAdvance, Plant, SleepAdvance, TestClock};

/// Expands to one `#[tokio::test]` per conformance test, each calling `$make().await` for a
/// fresh [`Fixture`]. The calling crate needs `tokio` (with `macros` and `rt-multi-thread`)
/// as a dev-dependency.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::__conformance_names!(__conformance_tests; $make);
    };
}

/// Expands to a future that runs every conformance test in turn, each on a fresh fixture
/// from the future `$make` (an expression evaluated once per test), printing each test's
/// name first. For a ledger whose test setup is too costly to repeat per `#[test]` (a Redis
/// Cluster of several processes): one test starts it, runs the suite, and stops it.
#[macro_export]
macro_rules! conformance_sequence {
    ($make:expr) => {
        $crate::__conformance_names!(__conformance_sequence; $make)
    };
}

/// Calls `$crate::$then!` with the given arguments, then the names of every conformance
/// test: the one list both [`conformance_tests!`] and [`conformance_sequence!`] expand.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_names {
    ($then:ident; $($args:tt)*) => {
        $crate::$then! { $($args)*;
            offer_absent_is_accepted,
            offer_finished_with_new_version_is_accepted,
            offer_finished_blocking_is_duplicate,
            offer_finished_not_blocking_is_accepted,
            offer_leased_is_duplicate_and_remembers_newer_version,
            offer_after_lease_expiry_reclaims_and_fences,
            start_runs_a_queued_key,
            offer_and_start_runs_accepted_keys,
            renew_extends_the_lease,
            complete_finishes_a_running_key,
            complete_after_newer_version_does_not_block,
            fail_retries_then_goes_dead,
            release_makes_the_key_absent,
            remove_finished_keys,
            remove_leased_key_needs_force,
            retry_revives_only_dead_keys,
            purge_by_age,
            purge_by_count,
            stale_tokens_change_nothing,
            lease_expiry_lets_exactly_one_through,
            concurrent_offers_accept_each_key_once,
            crash_cap_sends_abandoned_keys_dead,
            ignored_newer_versions_are_forgotten,
            dead_blocking_window,
            kept_is_not_blocking,
            outdated_offers_of_finished_keys_are_refused,
            outdated_offers_are_refused_whatever_the_blocking_policy,
            outdated_offers_of_leased_keys_are_refused,
            outdated_offers_do_not_take_expired_leases_over,
            a_remembered_newer_version_is_kept_over_older_offers,
            same_newer_opaque_and_unversioned_offers_keep_their_rules,
            batches_answer_ordered_versions_in_order,
            a_key_twice_in_a_batch_with_ordered_versions,
            stats_agree_with_list,
            stats_count_expired_leases,
            an_unreadable_record_is_answered_for_its_key_alone,
            claims_on_an_unreadable_record_are_refused_alone,
            a_forced_remove_repairs_an_unreadable_record,
            batches_answer_in_order,
            a_key_twice_in_a_batch_sees_its_first_outcome,
            dropped_calls_apply_each_item_whole_or_not_at_all,
            unusual_keys_round_trip,
            every_transition_follows_the_rules,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($make:path; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::conformance::$name($make().await).await;
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_sequence {
    ($make:expr; $($name:ident),* $(,)?) => {
        async {
            $(
                eprintln!("conformance: {}", stringify!($name));
                $crate::conformance::$name($make.await).await;
            )*
        }
    };
}

/// Expands to a `#[test]` running the model-based test ([`model::check`]) for `$cases`
/// random operation sequences on fresh fixtures from `$make`.
#[macro_export]
macro_rules! model_test {
    ($make:path, $cases:expr) => {
        #[test]
        fn matches_the_reference_model() {
            $crate::model::check(|| $make(), $cases);
        }
    };
}
