//! The conformance suite and the model-based test, on the memory ledger, and on a wrapper that
//! runs `Ledger::offer_and_start` as the trait's two-step default (`offer_then_start`).

use qupid_testkit::memory_fixture;

qupid_testkit::conformance_tests!(memory_fixture);
qupid_testkit::model_test!(memory_fixture, 512);

mod two_step_offer_and_start {
    use qupid::MemoryLedger;
    use qupid_testkit::{memory_fixture, FaultyLedger, Fixture};

    async fn fixture() -> Fixture<FaultyLedger<MemoryLedger>> {
        let f = memory_fixture().await;
        Fixture {
            ledger: FaultyLedger::new(f.ledger),
            clock: f.clock,
            tick: f.tick,
            plant: f.plant,
            tokens_per_key: false,
        }
    }

    qupid_testkit::conformance_tests!(fixture);
    qupid_testkit::model_test!(fixture, 128);
}

/// Offers, starts and completes `n` fresh keys under `prefix`.
async fn complete_fresh(l: &qupid::MemoryLedger, prefix: &str, n: usize) {
    use qupid::ledger::Claim;
    use qupid::{Key, Ledger, Offer, Policy};

    let offers: Vec<Offer> = (0..n)
        .map(|i| Offer::new(Key::new(format!("{prefix}{i}")).expect("valid key")))
        .collect();
    let out = l
        .offer_and_start(&Policy::default(), &offers)
        .await
        .expect("offer");
    let claims: Vec<Claim> = offers
        .into_iter()
        .zip(out)
        .filter_map(|(o, r)| {
            r.lease().map(|lease| Claim {
                key: o.key,
                token: lease.token,
            })
        })
        .collect();
    assert_eq!(claims.len(), n, "every fresh key accepted");
    l.complete(&claims).await.expect("complete");
}

/// A purge of many keys yields to the runtime as it goes: on a current-thread runtime, another
/// task runs while it purges (before, the purge never awaited, and the task ran only after).
#[tokio::test(flavor = "current_thread")]
async fn a_large_purge_lets_other_tasks_run() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use qupid::{Keep, LedgerAdmin, MemoryLedger, Retention};

    let l = MemoryLedger::new();
    for (round, keep) in [
        Keep::younger_than(std::time::Duration::ZERO),
        Keep::newest(0),
    ]
    .into_iter()
    .enumerate()
    {
        complete_fresh(&l, &format!("k{round}_"), 20_000).await;
        let ticks = Arc::new(AtomicU64::new(0));
        let beside = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        let retention = Retention {
            completed: keep,
            dead: Keep::FOREVER,
        };
        let purged = l.purge(&retention).await.expect("purge");
        let seen = ticks.load(Ordering::Relaxed);
        beside.abort();
        assert_eq!(purged.completed, 20_000, "{keep:?}");
        assert!(
            seen > 0,
            "{keep:?}: the other task never ran during the purge"
        );
    }
}
