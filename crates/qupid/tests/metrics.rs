//! The counters a pipeline records through the `metrics` crate, by their documented names.

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use qupid::observe::names;
use qupid::{Entry, MemoryLedger, Pipeline, Source};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_records_its_counters_under_the_documented_names() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The pipeline takes its metric handles when it is built.
    let mut entries: Vec<_> = ["a", "b", "a", "c", "poison"]
        .into_iter()
        .map(|k| Entry::new(k, k.to_owned()).unwrap())
        .collect();
    // An ordered version, then an older one of the same key: outdated.
    for n in [2, 1] {
        entries.push(
            Entry::new("v", "v".to_owned())
                .unwrap()
                .with_ordered_version(n),
        );
    }
    let mut policy = qupid::Policy::default();
    policy.max_attempts = 1;
    let pipeline = metrics::with_local_recorder(&recorder, || {
        Pipeline::builder(MemoryLedger::new())
            .name("orders")
            .source(Source::stream(futures::stream::iter(entries)))
            .process(|a| {
                let poison = a.payload() == "poison";
                async move {
                    if poison {
                        Err("bad record")
                    } else {
                        Ok(())
                    }
                }
            })
            .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
            .policy(policy)
            .build()
            .unwrap()
    });
    let report = pipeline.run().await.unwrap();
    let values: HashMap<String, (Vec<(String, String)>, DebugValue)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, v)| {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (key.key().name().to_owned(), (labels, v))
        })
        .collect();
    let counter = |name: &str| match values.get(name) {
        Some((labels, DebugValue::Counter(n))) => {
            assert_eq!(
                labels,
                &vec![("queue".to_owned(), "orders".to_owned())],
                "{name}"
            );
            *n
        }
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(counter(names::OFFERED), 7);
    assert_eq!(counter(names::DUPLICATES), 1);
    assert_eq!(counter(names::OUTDATED), 1);
    assert_eq!(counter(names::ACCEPTED), 5);
    assert_eq!(counter(names::COMPLETED), 4);
    assert_eq!(counter(names::FAILED), 1);
    assert_eq!(counter(names::DEAD), 1);
    assert_eq!(
        (
            report.completed,
            report.dead,
            report.duplicates,
            report.outdated
        ),
        (4, 1, 1, 1)
    );
    match values.get(names::RUNNING) {
        Some((_, DebugValue::Gauge(g))) => {
            assert_eq!(g.into_inner(), 0.0, "nothing running at the end")
        }
        other => panic!("running gauge: {other:?}"),
    }
}
