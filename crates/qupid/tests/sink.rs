//! The conditional object-store sink against `object_store`'s in-memory store: newer saves
//! replace older ones, older ones never replace newer ones, even when holders race.
#![cfg(feature = "object-store")]

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use qupid::ledger::Token;
use qupid::sink::{ObjectSink, Saved, SinkError, Stamp};
use qupid::{Entry, MemoryLedger, Pipeline, Source, Version};

fn ordered(v: u64, token: u64) -> Stamp {
    Stamp::new(Some(Version::ordered(v)), Token::new(token))
}

fn opaque(v: &str, token: u64) -> Stamp {
    Stamp::new(Some(Version::new(v).unwrap()), Token::new(token))
}

async fn body(store: &dyn ObjectStore, path: &Path) -> String {
    let bytes = store.get(path).await.unwrap().bytes().await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn memory() -> (Arc<InMemory>, ObjectSink) {
    let store = Arc::new(InMemory::new());
    (store.clone(), ObjectSink::new(store))
}

#[tokio::test]
async fn a_newer_save_replaces_an_older_one() {
    let (store, sink) = memory();
    let path = Path::from("records/1.json");
    assert_eq!(sink.stamp(&path).await.unwrap(), None);
    let saved = sink
        .save_stamped(&path, &ordered(1, 5), "v1".into())
        .await
        .unwrap();
    assert_eq!(saved, Saved::Written);
    assert_eq!(sink.stamp(&path).await.unwrap(), Some(ordered(1, 5)));
    // A newer version under an *older* token: the version orders first.
    let saved = sink
        .save_stamped(&path, &ordered(2, 3), "v2".into())
        .await
        .unwrap();
    assert!(saved.is_written());
    assert_eq!(body(&*store, &path).await, "v2");
    assert_eq!(sink.stamp(&path).await.unwrap(), Some(ordered(2, 3)));
    // The same version under a later lease replaces it too.
    sink.save_stamped(&path, &ordered(2, 4), "v2 again".into())
        .await
        .unwrap();
    assert_eq!(body(&*store, &path).await, "v2 again");
}

#[tokio::test]
async fn an_older_save_never_replaces_a_newer_one() {
    let (store, sink) = memory();
    let path = Path::from("records/1.json");
    sink.save_stamped(&path, &ordered(2, 5), "v2".into())
        .await
        .unwrap();
    for older in [ordered(1, 9), ordered(2, 4), ordered(0, 1)] {
        let saved = sink
            .save_stamped(&path, &older, "older".into())
            .await
            .unwrap();
        assert_eq!(
            saved,
            Saved::Superseded {
                stored: ordered(2, 5)
            },
            "{older}"
        );
    }
    assert_eq!(body(&*store, &path).await, "v2");
}

#[tokio::test]
async fn the_same_stamp_saved_again_writes_the_same_object() {
    let (store, sink) = memory();
    let path = Path::from("a");
    let stamp = ordered(3, 7);
    for _ in 0..3 {
        let saved = sink
            .save_stamped(&path, &stamp, "same".into())
            .await
            .unwrap();
        assert_eq!(saved, Saved::Written);
    }
    assert_eq!(body(&*store, &path).await, "same");
    assert_eq!(sink.stamp(&path).await.unwrap(), Some(stamp));
}

#[tokio::test]
async fn opaque_versions_and_none_order_by_token() {
    let (store, sink) = memory();
    let path = Path::from("a");
    sink.save_stamped(&path, &opaque("etag-a", 5), "a".into())
        .await
        .unwrap();
    let saved = sink
        .save_stamped(&path, &opaque("etag-b", 3), "b".into())
        .await
        .unwrap();
    assert_eq!(
        saved,
        Saved::Superseded {
            stored: opaque("etag-a", 5)
        }
    );
    // An older-looking version under a later lease wins: an opaque version does not order.
    let saved = sink
        .save_stamped(&path, &opaque("etag-0", 7), "0".into())
        .await
        .unwrap();
    assert_eq!(saved, Saved::Written);
    // An ordered version against an opaque one: tokens again.
    let saved = sink
        .save_stamped(&path, &ordered(100, 6), "o".into())
        .await
        .unwrap();
    assert!(!saved.is_written());
    let saved = sink
        .save_stamped(&path, &Stamp::new(None, Token::new(8)), "none".into())
        .await
        .unwrap();
    assert!(saved.is_written());
    assert_eq!(body(&*store, &path).await, "none");
    assert_eq!(
        sink.stamp(&path).await.unwrap(),
        Some(Stamp::new(None, Token::new(8)))
    );
}

#[tokio::test]
async fn an_object_without_a_stamp_is_replaced_and_a_broken_stamp_is_not() {
    let (store, sink) = memory();
    let foreign = Path::from("foreign");
    store.put(&foreign, "theirs".into()).await.unwrap();
    assert_eq!(sink.stamp(&foreign).await.unwrap(), None);
    let saved = sink
        .save_stamped(&foreign, &ordered(1, 1), "ours".into())
        .await
        .unwrap();
    assert_eq!(saved, Saved::Written);
    assert_eq!(body(&*store, &foreign).await, "ours");

    let broken = Path::from("broken");
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::Metadata("qupid-token".into()), "seven".into());
    store
        .put_opts(&broken, "theirs".into(), attributes.into())
        .await
        .unwrap();
    let err = sink
        .save_stamped(&broken, &ordered(1, 1), "ours".into())
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::InvalidStamp { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("seven"), "{err}");
    assert_eq!(body(&*store, &broken).await, "theirs");
}

#[tokio::test]
async fn attributes_are_written_with_the_stamp() {
    let store = Arc::new(InMemory::new());
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, "application/json".into());
    let sink = ObjectSink::new(store.clone()).attributes(attributes);
    let path = Path::from("a.json");
    sink.save_stamped(&path, &ordered(1, 2), "{}".into())
        .await
        .unwrap();
    let got = store.get(&path).await.unwrap();
    assert_eq!(
        got.attributes
            .get(&Attribute::ContentType)
            .map(|v| v.as_ref()),
        Some("application/json")
    );
    assert_eq!(
        got.attributes
            .get(&Attribute::Metadata("qupid-version".into()))
            .map(|v| v.as_ref()),
        Some("ordered:1")
    );
}

/// A store in front of [`InMemory`] that can pause before each call (so that concurrent
/// saves interleave between their read and their write), meddle before conditional writes,
/// refuse them, and keeps a log of the stamps it wrote, in the order it wrote them.
#[derive(Debug, Default)]
struct Harness {
    inner: InMemory,
    jitter: bool,
    /// Before this many conditional writes, writes an object without a stamp first, so that
    /// the write's precondition fails.
    meddle: AtomicU32,
    conditional_puts: AtomicU32,
    refuse_conditional: bool,
    writes: tokio::sync::Mutex<()>,
    log: Mutex<Vec<(Path, Stamp)>>,
}

impl fmt::Display for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Harness")
    }
}

impl Harness {
    async fn pause(&self) {
        if self.jitter {
            for _ in 0..fastrand::usize(0..4) {
                tokio::task::yield_now().await;
            }
            if fastrand::bool() {
                tokio::time::sleep(Duration::from_micros(fastrand::u64(0..300))).await;
            }
        }
    }

    fn stamp_of(attributes: &Attributes) -> Option<Stamp> {
        let get = |k: &'static str| {
            attributes
                .get(&Attribute::Metadata(k.into()))
                .map(|v| v.as_ref().to_owned())
        };
        let token = Token::new(get("qupid-token")?.parse().ok()?);
        let version = get("qupid-version").map(|v| match v.strip_prefix("ordered:") {
            Some(n) => Version::ordered(n.parse().unwrap()),
            None => Version::new(v.strip_prefix("opaque:").unwrap()).unwrap(),
        });
        Some(Stamp::new(version, token))
    }
}

#[async_trait]
impl ObjectStore for Harness {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.pause().await;
        if opts.mode != PutMode::Overwrite {
            self.conditional_puts.fetch_add(1, Ordering::SeqCst);
            if self.refuse_conditional {
                return Err(object_store::Error::NotImplemented {
                    operation: "conditional put".into(),
                    implementer: self.to_string(),
                });
            }
            let meddle = self
                .meddle
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if meddle {
                self.inner.put(location, "meddled".into()).await?;
            }
        }
        let stamp = Self::stamp_of(&opts.attributes);
        // Writes and their log entries in one order: the order the store wrote them.
        let _one_at_a_time = self.writes.lock().await;
        let result = self.inner.put_opts(location, payload, opts).await?;
        if let Some(stamp) = stamp {
            self.log
                .lock()
                .unwrap()
                .push((location.clone(), stamp.clone()));
        }
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.pause().await;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Holders race to save one key, round after round, on a multi-threaded runtime with pauses
/// between every read and write. In every round, the writes the store made are in stamp
/// order (none older after a newer one) and the newest stamp is the one left in place, with
/// its own payload.
async fn race(stamps_of_round: impl Fn(u64) -> Vec<Stamp>) {
    const ROUNDS: u64 = 200;
    let store = Arc::new(Harness {
        jitter: true,
        ..Harness::default()
    });
    let sink = ObjectSink::new(store.clone()).max_races(64);
    let (mut superseded, mut writes) = (0, 0);
    for round in 0..ROUNDS {
        let path = Path::from(format!("race/{round}"));
        let stamps = stamps_of_round(round);
        let tasks: Vec<_> = stamps
            .iter()
            .map(|stamp| {
                let (sink, path, stamp) = (sink.clone(), path.clone(), stamp.clone());
                tokio::spawn(async move {
                    let payload = PutPayload::from(stamp.to_string());
                    sink.save_stamped(&path, &stamp, payload).await
                })
            })
            .collect();
        for t in tasks {
            if !t.await.unwrap().unwrap().is_written() {
                superseded += 1;
            }
        }
        let newest = stamps
            .iter()
            .find(|s| stamps.iter().all(|o| !s.is_older_than(o)))
            .unwrap();
        assert_eq!(
            sink.stamp(&path).await.unwrap().as_ref(),
            Some(newest),
            "round {round}: {stamps:?}"
        );
        assert_eq!(body(&store.inner, &path).await, newest.to_string());
        let log = store.log.lock().unwrap();
        let written: Vec<&Stamp> = log
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, s)| s)
            .collect();
        writes += written.len();
        for pair in written.windows(2) {
            assert!(
                !pair[1].is_older_than(pair[0]),
                "round {round}: {} was written after {}: {written:?}",
                pair[1],
                pair[0]
            );
        }
    }
    eprintln!(
        "{ROUNDS} rounds: {writes} writes, {superseded} saves superseded, {} conditional puts",
        store.conditional_puts.load(Ordering::SeqCst)
    );
    assert!(
        superseded > 0,
        "the rounds should have had older saves refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_holders_never_leave_an_older_ordered_version_in_place() {
    race(|round| {
        // Four holders: distinct versions and tokens, in shuffled order.
        let mut stamps: Vec<Stamp> = (0..4)
            .map(|i| ordered(round * 10 + fastrand::u64(0..5), round * 100 + i))
            .collect();
        fastrand::shuffle(&mut stamps);
        stamps
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_holders_with_opaque_versions_leave_the_latest_lease_in_place() {
    race(|round| {
        let mut stamps: Vec<Stamp> = (0..4)
            .map(|i| opaque(&format!("etag-{}", fastrand::u32(..)), round * 100 + i))
            .collect();
        fastrand::shuffle(&mut stamps);
        stamps
    })
    .await;
}

#[tokio::test]
async fn lost_races_are_retried_a_bounded_number_of_times() {
    // Two lost races, then the write goes through.
    let store = Arc::new(Harness {
        meddle: AtomicU32::new(2),
        ..Harness::default()
    });
    let sink = ObjectSink::new(store.clone()).max_races(3);
    let path = Path::from("a");
    let saved = sink
        .save_stamped(&path, &ordered(1, 1), "ours".into())
        .await
        .unwrap();
    assert_eq!(saved, Saved::Written);
    assert_eq!(store.conditional_puts.load(Ordering::SeqCst), 3);
    assert_eq!(body(&store.inner, &path).await, "ours");

    // Always a race lost: gives up after the first write and three more.
    let store = Arc::new(Harness {
        meddle: AtomicU32::new(u32::MAX),
        ..Harness::default()
    });
    let sink = ObjectSink::new(store.clone()).max_races(3);
    let err = sink
        .save_stamped(&path, &ordered(1, 1), "ours".into())
        .await
        .unwrap_err();
    match &err {
        SinkError::Contended { races, source, .. } => {
            assert_eq!(*races, 4);
            assert!(
                matches!(
                    source,
                    object_store::Error::Precondition { .. }
                        | object_store::Error::AlreadyExists { .. }
                ),
                "{source:?}"
            );
        }
        other => panic!("expected Contended, found {other:?}"),
    }
    assert!(err.is_transient());
    assert_eq!(store.conditional_puts.load(Ordering::SeqCst), 4);
    let source = std::error::Error::source(&err).expect("the store's error is the source");
    assert!(source.downcast_ref::<object_store::Error>().is_some());
    assert_eq!(
        body(&store.inner, &path).await,
        "meddled",
        "nothing written"
    );
}

#[tokio::test]
async fn a_store_without_conditional_writes_is_an_error_not_an_overwrite() {
    let store = Arc::new(Harness {
        refuse_conditional: true,
        ..Harness::default()
    });
    store
        .inner
        .put(&Path::from("a"), "theirs".into())
        .await
        .unwrap();
    let sink = ObjectSink::new(store.clone());
    for path in [Path::from("a"), Path::from("b")] {
        let err = sink
            .save_stamped(&path, &ordered(1, 1), "ours".into())
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::Unsupported { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("conditionally"), "{err}");
    }
    assert_eq!(body(&store.inner, &Path::from("a")).await, "theirs");
    assert!(store.inner.head(&Path::from("b")).await.is_err());
}

/// Through a pipeline: the attempt's version and token are the stamp, and a key whose
/// output is already newer completes without a write.
#[tokio::test]
async fn a_pipeline_saves_with_the_attempts_stamp_and_completes_superseded_keys() {
    let store = Arc::new(InMemory::new());
    let sink = ObjectSink::new(store.clone());
    // Record 2's output is already at version 9 (saved by a later holder, say).
    sink.save_stamped(&Path::from("out/2"), &ordered(9, 1_000), "v9".into())
        .await
        .unwrap();
    let source = Source::poll(Duration::from_millis(10), || async {
        Ok::<_, std::io::Error>(
            (1..=3u64).map(|i| Entry::new(format!("{i}"), i).map(|e| e.with_ordered_version(5))),
        )
    });
    let superseded = Arc::new(AtomicU32::new(0));
    let counted = superseded.clone();
    let report = Pipeline::builder(MemoryLedger::new())
        .source(source)
        .process(|a| async move { Ok::<_, std::io::Error>(format!("v5 of {}", a.payload())) })
        .save(move |a, out: String| {
            let (sink, counted) = (sink.clone(), counted.clone());
            async move {
                let path = Path::from(format!("out/{}", a.key()));
                let saved = sink.save(&path, &a, out.into()).await?;
                assert_eq!(
                    sink.stamp(&path).await?,
                    Some(match &saved {
                        Saved::Written => Stamp::of(&a),
                        Saved::Superseded { stored } => stored.clone(),
                    })
                );
                if !saved.is_written() {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, SinkError>(())
            }
        })
        .stop_when_idle()
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.completed, 3);
    assert_eq!(superseded.load(Ordering::SeqCst), 1);
    assert_eq!(body(&*store, &Path::from("out/1")).await, "v5 of 1");
    assert_eq!(body(&*store, &Path::from("out/2")).await, "v9");
}
