//! Turning Redis errors into qupid's [`Error`], keeping the driver's error as the source.

use ::redis::{ErrorKind as RedisKind, RedisError, ServerErrorKind};

use crate::error::{Error, ErrorKind};

/// Maps a Redis error met while running `what` in `namespace`.
///
/// Connection trouble (I/O, timeouts, a server loading, a failover in progress) is
/// [`ErrorKind::Unavailable`], which callers may retry; a `WRONGTYPE` is
/// [`ErrorKind::Corrupt`] (a foreign key in the namespace); anything else is
/// [`ErrorKind::Ledger`].
pub(super) fn map_redis(e: RedisError, what: &str, namespace: &str) -> Error {
    let kind = classify(&e);
    let message = match kind {
        ErrorKind::Unavailable => format!("redis is unavailable during {what}: {e}"),
        ErrorKind::Corrupt => format!(
            "a key in redis namespace {namespace:?} holds the wrong type of value during {what}: {e}"
        ),
        _ => format!("redis refused {what} in namespace {namespace:?}: {e}"),
    };
    Error::with_source(kind, message, e)
}

/// Which qupid error kind a Redis error is.
pub(super) fn classify(e: &RedisError) -> ErrorKind {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return ErrorKind::Unavailable;
    }
    match e.kind() {
        RedisKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        )
        | RedisKind::ClusterConnectionNotFound => ErrorKind::Unavailable,
        _ if e.code() == Some("WRONGTYPE") => ErrorKind::Corrupt,
        _ => ErrorKind::Ledger,
    }
}

/// A key of the namespace that is not what qupid stored there.
pub(super) fn corrupt(namespace: &str, key: &[u8], want: &str, found: &str) -> Error {
    let key = String::from_utf8_lossy(key);
    Error::new(
        ErrorKind::Corrupt,
        format!(
            "redis key {key:?} of namespace {namespace:?} should be {want}, found {found}; \
             nothing was changed (remove or rename the foreign key)"
        ),
    )
}

/// `url` with any password replaced by `***`, fit to show in errors and logs.
pub(super) fn redact(url: &str) -> String {
    crate::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://:s3cret@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact("rediss://user:p@ss@h/"), "rediss://user:***@h/");
        assert_eq!(redact("redis://user@h/"), "redis://user@h/");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn io_errors_are_transient() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = map_redis(RedisError::from(refused), "offer", "ns");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_transient());
        assert!(
            std::error::Error::source(&e).is_some(),
            "keeps the driver error"
        );
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(classify(&RedisError::from(reset)), ErrorKind::Unavailable);
    }

    #[test]
    fn wrongtype_is_corrupt() {
        let e = ::redis::make_extension_error(
            "WRONGTYPE".into(),
            Some("Operation against a key holding the wrong kind of value".into()),
        );
        let e = map_redis(e, "offer", "ns");
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("\"ns\""), "{e}");
    }

    #[test]
    fn other_errors_are_not() {
        let e = RedisError::from((RedisKind::Client, "bad"));
        assert_eq!(classify(&e), ErrorKind::Ledger);
    }
}
