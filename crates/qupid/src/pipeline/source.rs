//! Sources: where entries come from.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};

use crate::error::BoxError;
use crate::key::Entry;

/// An entry a source handed over, or why it could not make one.
pub(crate) type Item<T> = Result<Entry<T>, BoxError>;

type PollFn<T> = Box<dyn FnMut() -> BoxFuture<'static, Result<Vec<Item<T>>, BoxError>> + Send>;

/// What a source may hand over: an [`Entry`], or the result of making one.
///
/// A source that builds entries from rows it does not control (keys from another system,
/// versions from a column) hands over `Result<Entry<T>, E>`s: each `Err` — an invalid key,
/// a row it could not read — is skipped, counted in [`Report::invalid`](crate::Report::invalid)
/// and logged once, and never holds up the other entries of the batch.
pub trait SourceItem<T>: sealed::Sealed<T> {
    /// The entry, or why there is none.
    ///
    /// # Errors
    ///
    /// The error the item carried.
    fn into_entry(self) -> Result<Entry<T>, BoxError>;
}

impl<T> SourceItem<T> for Entry<T> {
    fn into_entry(self) -> Result<Entry<T>, BoxError> {
        Ok(self)
    }
}

impl<T, E: Into<BoxError>> SourceItem<T> for Result<Entry<T>, E> {
    fn into_entry(self) -> Result<Entry<T>, BoxError> {
        self.map_err(Into::into)
    }
}

mod sealed {
    pub trait Sealed<T> {}
    impl<T> Sealed<T> for crate::key::Entry<T> {}
    impl<T, E> Sealed<T> for Result<crate::key::Entry<T>, E> {}
}

/// Where a pipeline's entries come from: a function polled on an interval, or a stream.
///
/// Several sources merge into one queue; the ledger de-duplicates across all of them. A
/// source hands over entries, or results of making them ([`SourceItem`]): one bad row is
/// skipped and counted, the rest of the batch goes on.
///
/// ```
/// use std::time::Duration;
/// use qupid::{Entry, Source};
///
/// // Polled every 5 seconds. Each row becomes an entry or an error of its own: a row with
/// // an invalid key is skipped (and counted), the others are offered.
/// let polled = Source::poll(Duration::from_secs(5), || async {
///     let rows = vec![("orders/1", 1u32), ("", 2)]; // your query
///     Ok::<_, std::io::Error>(rows.into_iter().map(|(k, v)| Entry::new(k, v)))
/// });
///
/// // Any stream of entries (or of results); the source is finished when the stream ends.
/// let entries = vec![Entry::new("orders/2", 2u32)?];
/// let streamed = Source::stream(futures::stream::iter(entries)).named("backfill");
/// # Ok::<(), qupid::Error>(())
/// ```
pub struct Source<T> {
    pub(crate) name: String,
    pub(crate) kind: Kind<T>,
}

pub(crate) enum Kind<T> {
    Poll {
        every: Duration,
        poll: PollFn<T>,
        max_age: Duration,
    },
    Stream(BoxStream<'static, Item<T>>),
}

/// The default [`Source::max_snapshot_age`] of a source polled `every`.
fn default_max_age(every: Duration) -> Duration {
    (every.saturating_mul(2)).max(Duration::from_secs(5))
}

impl<T: Send + 'static> Source<T> {
    /// A source that calls `poll` right away and then every `every`, offering the batch it
    /// returns: any iterable of entries, or of results of making them ([`SourceItem`]).
    ///
    /// A poll that fails (or panics) is logged and counted, and the next one goes on; an item
    /// that is an error is skipped, counted and logged, and the rest of the batch goes on.
    pub fn poll<F, Fut, E, I>(every: Duration, mut poll: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<I, E>> + Send + 'static,
        E: Into<BoxError>,
        I: IntoIterator,
        I::Item: SourceItem<T>,
    {
        let poll: PollFn<T> = Box::new(move || {
            let fut = poll();
            Box::pin(async move {
                let items = fut.await.map_err(Into::into)?;
                Ok(items.into_iter().map(SourceItem::into_entry).collect())
            })
        });
        Source {
            name: "poll".into(),
            kind: Kind::Poll {
                every,
                poll,
                max_age: default_max_age(every),
            },
        }
    }

    /// A source that offers every entry of `stream`, in batches of what is ready. It is
    /// finished when the stream ends. Items may be entries or results ([`SourceItem`]); an
    /// error is skipped, counted and logged.
    pub fn stream<S>(stream: S) -> Self
    where
        S: Stream + Send + 'static,
        S::Item: SourceItem<T>,
    {
        Source {
            name: "stream".into(),
            kind: Kind::Stream(stream.map(SourceItem::into_entry).boxed()),
        }
    }

    /// How long after a poll began its entries may still be offered (a polled source only;
    /// by default twice the poll interval, and at least 5 seconds).
    ///
    /// A poll's entries are offered as buffer space frees up, so with a large poll and busy
    /// workers the last ones could be offered long after they were read — after another
    /// instance processed a newer version of the record, which an opaque version cannot tell
    /// apart from an older one. Past this age the entries not yet offered are dropped and
    /// counted ([`Report::stale`](crate::Report::stale)); the next poll reads them again,
    /// fresh. A stream's entries are never dropped (a stream does not repeat them).
    ///
    /// Shorter is fresher but costs more polls when a poll returns more entries than the
    /// workers get through in that time. With [ordered versions](crate::Version::ordered) the
    /// ledger itself refuses an outdated offer, so the bound matters most for opaque ones.
    pub fn max_snapshot_age(mut self, age: Duration) -> Self {
        if let Kind::Poll { max_age, .. } = &mut self.kind {
            *max_age = age;
        }
        self
    }

    /// The same source with a name, for logs and spans.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl<T> fmt::Debug for Source<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Poll { every, max_age, .. } => {
                format!("poll every {every:?}, entries fresh for {max_age:?}")
            }
            Kind::Stream(_) => "stream".to_owned(),
        };
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("kind", &kind)
            .finish()
    }
}
