//! The edges where production lives: bad input from a source, errors that retrying cannot
//! fix, and outages that last.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use qupid::{Entry, MemoryLedger, Pipeline, Source};

/// Every log line of this test binary. One global subscriber: a per-thread one can miss
/// events whose call site another thread registered first.
#[derive(Clone)]
struct Logs(Arc<Mutex<Vec<u8>>>);

fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs(Arc::default());
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
        logs
    })
}

impl Logs {
    /// The lines that contain every one of `parts`.
    fn lines(&self, parts: &[&str]) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ok_save() -> impl Fn(qupid::Attempt<u32>, ()) -> futures::future::Ready<std::io::Result<()>> {
    |_, ()| futures::future::ready(Ok(()))
}

/// One empty key and one of 1,500 bytes among good ones: the good ones are processed, the
/// bad ones skipped and counted at every poll, logged once each, and an idle pipeline stops.
#[tokio::test]
async fn invalid_entries_are_skipped_counted_and_logged_once() {
    let logs = logs();
    let long = "x".repeat(1500);
    let source = Source::poll(Duration::from_millis(5), move || {
        let keys = [
            "good/1".to_owned(),
            String::new(),
            long.clone(),
            "good/2".to_owned(),
        ];
        async move { Ok::<_, std::io::Error>(keys.into_iter().map(|k| Entry::new(k, 1u32))) }
    })
    .named("bad-keys");
    let run = Pipeline::builder(MemoryLedger::new())
        .source(source)
        .process(|_| async { Ok::<_, std::io::Error>(()) })
        .save(ok_save())
        .stop_when_idle()
        .build()
        .unwrap()
        .run();
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("an idle pipeline stops by itself")
        .unwrap();
    assert_eq!(report.completed, 2, "{report}");
    // Two bad entries per poll, and at least two polls (one to work, one to find it idle).
    assert!(report.invalid >= 4 && report.invalid % 2 == 0, "{report}");
    assert_eq!(
        report.polled,
        report.accepted + report.duplicates,
        "invalid entries are not offered"
    );
    let warned = logs.lines(&["source=bad-keys", "skipped an invalid entry"]);
    assert_eq!(warned.len(), 2, "once per distinct bad entry: {warned:#?}");
    assert!(
        warned.iter().any(|l| l.contains("must not be empty")),
        "{warned:#?}"
    );
    let long_one = warned
        .iter()
        .find(|l| l.contains("1500 bytes"))
        .expect("the long key is named");
    assert!(
        long_one.contains(&format!("key \"{}\"… must", "x".repeat(40))),
        "named by a readable excerpt: {long_one}"
    );
}

/// A stream of results: the errors are skipped, the stream goes on to its end.
#[tokio::test]
async fn a_stream_of_results_skips_its_errors() {
    let items = vec![
        Entry::new("a", 1u32),
        Entry::new("", 2),
        Entry::new("b", 3),
        Entry::new("c", 4).and_then(|e| e.with_version("")),
    ];
    let report = Pipeline::builder(MemoryLedger::new())
        .source(Source::stream(futures::stream::iter(items).boxed()))
        .process(|_| async { Ok::<_, std::io::Error>(()) })
        .save(ok_save())
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((report.completed, report.invalid), (2, 2), "{report}");
}
