//! The one error type of qupid.

use std::fmt;

/// A boxed error from user code or a driver, kept as the `source()` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in broad strokes. Match on it to decide what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A key was empty, too long, or otherwise not acceptable.
    InvalidKey,
    /// A version was empty or too long.
    InvalidVersion,
    /// A builder or policy was given settings that cannot work together.
    Config,
    /// The ledger could not be reached or stopped answering; worth retrying.
    Unavailable,
    /// The ledger's stored data is not what this version of qupid expects
    /// (corrupted, written by a newer version, or a foreign object in the namespace).
    Corrupt,
    /// The ledger refused an operation for a reason that retrying will not fix.
    Ledger,
    /// The operation did not finish in time.
    Timeout,
    /// The queue or pipeline was closed.
    Closed,
    /// The queue's buffer is full (only from `try_*` calls, which never wait).
    Full,
    /// The job's lease was taken over by another holder (or the key was removed): the job no
    /// longer owns the key and must stop.
    LeaseLost,
    /// There is no qupid ledger where a [read-only](crate::ledger#read-only-ledgers) open
    /// looked: no file, an empty file, or a SQLite database without qupid's tables; no schema
    /// for the namespace in PostgreSQL; no key of the namespace in Redis. A read-only open
    /// never creates a ledger, where a read-write one would have.
    NotFound,
    /// The ledger was opened [read-only](crate::ledger#read-only-ledgers) and the call would
    /// write to it: every write method answers this, changing nothing.
    ReadOnly,
}

/// The error type of every fallible qupid operation.
///
/// Use [`Error::kind`] to tell errors apart and [`Error::is_transient`] to know whether
/// retrying may help. A driver's own error, when there is one, is the [`source`].
///
/// `Display` is the message; `Debug` (what `main` prints for an error it returns, and what
/// `unwrap` shows) is the kind, the message and the chain of causes, the way `anyhow` prints
/// one:
///
/// ```text
/// invalid configuration: lease must be at least 10ms, found 1ms
/// ```
///
/// ```text
/// ledger unavailable: postgres at postgres://db/app is unavailable during connect: …
///
/// Caused by:
///     error connecting to server: Connection refused (os error 111)
/// ```
///
/// The alternate form (`{:#?}`) is the struct, field by field.
///
/// [`source`]: std::error::Error::source
#[derive(thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind` with a lowercase message saying what was expected and found.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A new error of `kind` that wraps the underlying `source` (usually a driver error).
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the same call may succeed if tried again later
    /// (the ledger was unreachable or timed out).
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable | ErrorKind::Timeout)
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// The same kind and message without the source: for telling many waiters of one failure.
    pub(crate) fn share(&self) -> Self {
        Error::new(self.kind, self.to_string())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return f
                .debug_struct("Error")
                .field("kind", &self.kind)
                .field("message", &self.message)
                .field("source", &self.source)
                .finish();
        }
        write!(f, "{}: {}", self.kind, self.message)?;
        // Causes whose words the message already holds (many messages quote their driver's
        // error) are not said again.
        let mut said = self.message.clone();
        let mut causes = Vec::new();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            let text = cause.to_string();
            if !text.is_empty() && !said.contains(&text) {
                said.push_str(&text);
                causes.push(text);
            }
            next = cause.source();
        }
        match causes.as_slice() {
            [] => Ok(()),
            [one] => write!(f, "\n\nCaused by:\n    {one}"),
            many => {
                f.write_str("\n\nCaused by:")?;
                for (i, cause) in many.iter().enumerate() {
                    write!(f, "\n    {i}: {cause}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::InvalidKey => "invalid key",
            ErrorKind::InvalidVersion => "invalid version",
            ErrorKind::Config => "invalid configuration",
            ErrorKind::Unavailable => "ledger unavailable",
            ErrorKind::Corrupt => "ledger data corrupt",
            ErrorKind::Ledger => "ledger error",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Closed => "closed",
            ErrorKind::Full => "full",
            ErrorKind::LeaseLost => "lease lost",
            ErrorKind::NotFound => "no ledger found",
            ErrorKind::ReadOnly => "ledger is read-only",
        };
        f.write_str(s)
    }
}

/// A `Result` whose error is qupid's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Cause(&'static str, Option<Box<Cause>>);

    impl fmt::Display for Cause {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Cause {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    #[test]
    fn debug_reads_like_display_with_its_causes() {
        let e = Error::new(ErrorKind::Config, "lease must be at least 10ms, found 1ms");
        assert_eq!(
            format!("{e:?}"),
            "invalid configuration: lease must be at least 10ms, found 1ms"
        );
        let e = Error::with_source(
            ErrorKind::Unavailable,
            "redis at redis://h/ stopped answering",
            Cause("connection reset", None),
        );
        assert_eq!(
            format!("{e:?}"),
            "ledger unavailable: redis at redis://h/ stopped answering\n\nCaused by:\n    \
             connection reset"
        );
        let chain = Cause("pool timed out", Some(Box::new(Cause("dns failed", None))));
        let e = Error::with_source(ErrorKind::Timeout, "connect", chain);
        assert_eq!(
            format!("{e:?}"),
            "timed out: connect\n\nCaused by:\n    0: pool timed out\n    1: dns failed"
        );
        // A cause the message already quotes is not said twice.
        let e = Error::with_source(
            ErrorKind::Config,
            "bad url: unknown option `x`",
            Cause("unknown option `x`", None),
        );
        assert_eq!(
            format!("{e:?}"),
            "invalid configuration: bad url: unknown option `x`"
        );
        // The alternate form is the struct.
        let alt = format!("{e:#?}");
        assert!(
            alt.starts_with("Error {") && alt.contains("kind: Config"),
            "{alt}"
        );
    }
}
