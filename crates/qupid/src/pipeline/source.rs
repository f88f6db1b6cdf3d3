//! Sources: where entries come from.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};

use crate::error::BoxError;
use crate::key::Entry;

type PollFn<T> = Box<dyn FnMut() -> BoxFuture<'static, Result<Vec<Entry<T>>, BoxError>> + Send>;

/// Where a pipeline's entries come from: a function polled on an interval, or a stream.
///
/// Several sources merge into one queue; the ledger de-duplicates across all of them.
///
/// ```
/// use std::time::Duration;
/// use qupid::{Entry, Source};
///
/// // Polled every 5 seconds; errors are logged and counted, and the next poll goes on.
/// let polled = Source::poll(Duration::from_secs(5), || async {
///     Ok::<_, qupid::Error>(vec![Entry::new("orders/1", 1u32)?])
/// });
///
/// // Any stream of entries; the source is finished when the stream ends.
/// let entries = vec![Entry::new("orders/2", 2u32)?];
/// let streamed = Source::stream(futures::stream::iter(entries)).named("backfill");
/// # Ok::<(), qupid::Error>(())
/// ```
pub struct Source<T> {
    pub(crate) name: String,
    pub(crate) kind: Kind<T>,
}

pub(crate) enum Kind<T> {
    Poll { every: Duration, poll: PollFn<T> },
    Stream(BoxStream<'static, Entry<T>>),
}

impl<T: Send + 'static> Source<T> {
    /// A source that calls `poll` right away and then every `every`, offering the batch it
    /// returns. A poll that fails (or panics) is logged and counted; the next one goes on.
    pub fn poll<F, Fut, E>(every: Duration, mut poll: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<Entry<T>>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let poll: PollFn<T> = Box::new(move || {
            let fut = poll();
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        Source {
            name: "poll".into(),
            kind: Kind::Poll { every, poll },
        }
    }

    /// A source that offers every entry of `stream`, in batches of what is ready. It is
    /// finished when the stream ends.
    pub fn stream<S>(stream: S) -> Self
    where
        S: Stream<Item = Entry<T>> + Send + 'static,
    {
        Source {
            name: "stream".into(),
            kind: Kind::Stream(stream.boxed()),
        }
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
            Kind::Poll { every, .. } => format!("poll every {every:?}"),
            Kind::Stream(_) => "stream".to_owned(),
        };
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("kind", &kind)
            .finish()
    }
}
