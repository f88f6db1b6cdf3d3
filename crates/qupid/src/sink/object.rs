//! The conditional object-store sink.

use std::fmt;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, PutMode, PutOptions,
    PutPayload, UpdateVersion,
};

use super::{SinkError, Stamp};
use crate::pipeline::Attempt;

/// What a save did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// The object was written: there was none, or its stamp was not newer than this save's.
    Written,
    /// A newer save is in place: nothing was written. Not an error — the key's output is
    /// already at least as new, so a pipeline may complete the key.
    Superseded {
        /// The stamp of the object in place.
        stored: Stamp,
    },
}

impl Saved {
    /// Whether this save wrote the object.
    pub fn is_written(&self) -> bool {
        matches!(self, Saved::Written)
    }
}

/// Saves objects to an [`ObjectStore`] so that older output never replaces newer, even when
/// several holders of a key race (a paused process, an expired lease, a stale snapshot).
///
/// Each object carries its [`Stamp`] — the record's version and the lease's fencing token —
/// in its user metadata (`qupid-version`, `qupid-token`; `x-amz-meta-…` on S3). A save reads
/// the current object's stamp and ETag (a `HEAD`), and writes only if its own stamp is not
/// older, with a compare-and-swap: `PutMode::Update` on the ETag it read, or
/// `PutMode::Create` when there was no object. When another writer got in between (the
/// precondition fails, or the object now exists), it reads again and decides again, up to
/// [`max_races`](ObjectSink::max_races) times. An object without a stamp (written by
/// something else) is older than any save.
///
/// ```
/// use std::sync::Arc;
/// use object_store::{memory::InMemory, path::Path, ObjectStoreExt};
/// use qupid::sink::{ObjectSink, Saved};
/// use qupid::{Attempt, Entry, MemoryLedger, Pipeline, Source};
/// # use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // S3 in production: object_store::aws::AmazonS3Builder::from_env()...build()?
/// let store = Arc::new(InMemory::new());
/// let sink = ObjectSink::new(store.clone());
/// let source = Source::poll(Duration::from_secs(1), || async {
///     // (id, updated_at) from your source of truth.
///     let rows = [(1, 1_700_000_000_000u64), (2, 1_700_000_000_500)];
///     Ok::<_, std::io::Error>(rows.into_iter().map(|(id, updated_at)| {
///         Entry::new(format!("orders/{id}"), id).map(|e| e.with_ordered_version(updated_at))
///     }))
/// });
/// Pipeline::builder(MemoryLedger::new())
///     .source(source)
///     .process(|a: Attempt<i32>| async move { Ok::<_, std::io::Error>(format!("order {}", a.payload())) })
///     .save(move |a, out: String| {
///         let sink = sink.clone();
///         async move {
///             let path = Path::from(format!("{}.txt", a.key()));
///             match sink.save(&path, &a, out.into()).await? {
///                 Saved::Written => {}
///                 // A newer save is already there: nothing to do.
///                 Saved::Superseded { .. } => {}
///             }
///             Ok::<_, qupid::sink::SinkError>(())
///         }
///     })
///     .stop_when_idle()
///     .build()?
///     .run()
///     .await?;
/// let saved = store.get(&Path::from("orders/2.txt")).await?.bytes().await?;
/// assert_eq!(&saved[..], b"order 2");
/// # Ok(())
/// # }
/// ```
///
/// # What it guarantees, and what it does not
///
/// - A save never replaces an object whose stamp is newer than its own, however many
///   holders race: each write is conditional on the state the decision was made on.
/// - It orders *saves*, not records: with opaque versions (or none) only fencing tokens
///   order, so a stale snapshot processed under a later lease replaces newer content (until
///   the newer version is processed again). Ordered versions ([`Version::ordered`]) rule
///   that out.
/// - On S3 an ETag is the MD5 of the bytes (for a plain upload), not of the metadata: if the
///   object went from bytes X to others and back to exactly X between a save's read and its
///   write, the write is not refused. Putting the version in the output rules that out.
/// - Tokens order only within one ledger's life (see [`Stamp`]).
///
/// # S3 (`object_store::aws`)
///
/// The S3 client writes `PutMode::Create` with `If-None-Match: *` and `PutMode::Update` with
/// `If-Match: <etag>` when its `conditional_put` setting is `S3ConditionalPut::ETagMatch` —
/// the default in `object_store` 0.14 (`aws_conditional_put=disabled` turns it off, and the
/// sink then fails with [`SinkError::Unsupported`] rather than write unconditionally). AWS S3
/// honours both headers (since 2024), as do MinIO, Cloudflare R2 and moto 5. A `HEAD` or
/// `GET` returns the `x-amz-meta-*` headers as `Attribute::Metadata` entries of
/// `GetResult::attributes` (keys without the prefix, lowercase), which is where the sink reads
/// the stamp; [`ObjectStoreExt::head`](object_store::ObjectStoreExt::head) drops them, so the
/// sink reads with `get_opts` and `head: true`. S3 caps user metadata at 2 KB: an opaque
/// version is kept percent-encoded, so a long one with many non-ASCII bytes can be refused.
///
/// Other backends: `InMemory` supports both modes and attributes; GCS and Azure support the
/// modes; the local file system does not support `PutMode::Update`.
///
/// [`Version::ordered`]: crate::Version::ordered
#[derive(Clone)]
pub struct ObjectSink {
    store: Arc<dyn ObjectStore>,
    attributes: Attributes,
    max_races: u32,
}

impl ObjectSink {
    /// A sink over `store`.
    ///
    /// ## Defaults
    ///
    /// | setting | default |
    /// |---|---|
    /// | [`max_races`](ObjectSink::max_races) | 8 lost races in a row before [`SinkError::Contended`] |
    /// | [`attributes`](ObjectSink::attributes) | none besides the stamp |
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ObjectSink {
            store,
            attributes: Attributes::new(),
            max_races: 8,
        }
    }

    /// How many times in a row a save may lose a race (another writer changed the object
    /// between its read and its write) and read and decide again, before it gives up with
    /// [`SinkError::Contended`]. Each race lost means another save landed, so a key with
    /// only a few holders at a time settles within a few rounds.
    pub fn max_races(mut self, n: u32) -> Self {
        self.max_races = n;
        self
    }

    /// Attributes to write with every object (`Attribute::ContentType`,
    /// `Attribute::CacheControl`, more metadata). The stamp's metadata keys are the sink's.
    pub fn attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Saves `payload` at `path`, stamped with `attempt`'s version and fencing token, unless
    /// a newer save is in place ([`Saved::Superseded`]). See [`save_stamped`](ObjectSink::save_stamped).
    ///
    /// # Errors
    ///
    /// As [`save_stamped`](ObjectSink::save_stamped).
    ///
    /// # Cancel safety
    ///
    /// As [`save_stamped`](ObjectSink::save_stamped).
    pub async fn save<T>(
        &self,
        path: &Path,
        attempt: &Attempt<T>,
        payload: PutPayload,
    ) -> Result<Saved, SinkError> {
        self.save_stamped(path, &Stamp::of(attempt), payload).await
    }

    /// Saves `payload` at `path` with `stamp`, unless the object in place has a newer stamp.
    ///
    /// Reads the object's stamp and ETag; answers [`Saved::Superseded`] if the stamp is newer
    /// than `stamp`; otherwise writes conditionally on what it read and answers
    /// [`Saved::Written`]. A lost race (the object changed in between) reads and decides
    /// again, up to [`max_races`](ObjectSink::max_races) times.
    ///
    /// # Errors
    ///
    /// - [`SinkError::Read`], [`SinkError::Write`]: the store failed (unreachable, denied).
    /// - [`SinkError::Unsupported`]: the store cannot write conditionally.
    /// - [`SinkError::Contended`]: too many races lost in a row; nothing was written.
    /// - [`SinkError::NoETag`], [`SinkError::InvalidStamp`]: the object in place cannot be
    ///   compared with or replaced safely; nothing was written.
    ///
    /// [`SinkError::is_transient`] tells which are worth retrying.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the object as it was, or replaced whole by this save (a put
    /// is atomic: never half an object). A put already sent may still land after the drop; it
    /// is conditional on the object this save read, so it never replaces one written after
    /// that read. Saving again with the same stamp is harmless: equal stamps write again.
    pub async fn save_stamped(
        &self,
        path: &Path,
        stamp: &Stamp,
        payload: PutPayload,
    ) -> Result<Saved, SinkError> {
        let attributes = self.attributes_of(stamp);
        let mut races = 0;
        loop {
            let mode = match self.current(path).await? {
                None => PutMode::Create,
                Some(current) => {
                    if let Some(stored) = current.stamp {
                        if stamp.is_older_than(&stored) {
                            return Ok(Saved::Superseded { stored });
                        }
                    }
                    if current.version.e_tag.is_none() && current.version.version.is_none() {
                        return Err(SinkError::NoETag {
                            path: path.to_string(),
                        });
                    }
                    PutMode::Update(current.version)
                }
            };
            let opts = PutOptions {
                mode,
                attributes: attributes.clone(),
                ..PutOptions::default()
            };
            match self.store.put_opts(path, payload.clone(), opts).await {
                Ok(_) => return Ok(Saved::Written),
                Err(
                    e @ (object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. }),
                ) => {
                    races += 1;
                    tracing::debug!(%path, races, "the object changed between the read and the write; reading again");
                    if races > self.max_races {
                        return Err(SinkError::Contended {
                            path: path.to_string(),
                            races,
                            source: e,
                        });
                    }
                }
                Err(
                    e @ (object_store::Error::NotImplemented { .. }
                    | object_store::Error::NotSupported { .. }),
                ) => {
                    return Err(SinkError::Unsupported {
                        path: path.to_string(),
                        source: e,
                    })
                }
                Err(source) => {
                    return Err(SinkError::Write {
                        path: path.to_string(),
                        source,
                    })
                }
            }
        }
    }

    /// The stamp of the object at `path`: `None` if there is no object, or one without a
    /// stamp (written by something else).
    ///
    /// # Errors
    ///
    /// [`SinkError::Read`] if the store fails, [`SinkError::InvalidStamp`] if the object's
    /// stamp cannot be read.
    ///
    /// # Cancel safety
    ///
    /// It only reads.
    pub async fn stamp(&self, path: &Path) -> Result<Option<Stamp>, SinkError> {
        Ok(self.current(path).await?.and_then(|c| c.stamp))
    }

    /// The attributes of an object saved with `stamp`.
    fn attributes_of(&self, stamp: &Stamp) -> Attributes {
        let mut attributes = self.attributes.clone();
        for (key, value) in stamp.to_metadata() {
            attributes.insert(Attribute::Metadata(key.into()), AttributeValue::from(value));
        }
        attributes
    }

    /// The object at `path`, if any: what a conditional write needs, and its stamp.
    async fn current(&self, path: &Path) -> Result<Option<Current>, SinkError> {
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let got = match self.store.get_opts(path, options).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => {
                return Err(SinkError::Read {
                    path: path.to_string(),
                    source,
                })
            }
        };
        let stamp = Stamp::from_metadata(|key| {
            got.attributes
                .get(&Attribute::Metadata(key.to_owned().into()))
                .map(|v| v.as_ref())
        })
        .map_err(|why| SinkError::InvalidStamp {
            path: path.to_string(),
            why,
        })?;
        Ok(Some(Current {
            version: UpdateVersion {
                e_tag: got.meta.e_tag,
                version: got.meta.version,
            },
            stamp,
        }))
    }
}

/// What a save read of the object in place.
struct Current {
    version: UpdateVersion,
    stamp: Option<Stamp>,
}

impl fmt::Debug for ObjectSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectSink")
            .field("store", &format_args!("{}", self.store))
            .field("max_races", &self.max_races)
            .finish_non_exhaustive()
    }
}
