//! Turning driver and pool errors into qupid's [`Error`], keeping the driver's error as the
//! source, and hiding passwords in the URLs that messages show.

use deadpool_postgres::PoolError;
use tokio_postgres::error::DbError;

use crate::error::{Error, ErrorKind};

/// SQLSTATEs after which the statement was rolled back and may simply run again.
const RETRYABLE: [&str; 2] = [
    "40001", // serialization_failure
    "40P01", // deadlock_detected
];

/// Whether `e` says the statement was rolled back by a conflict with another transaction,
/// so running it again is safe and may succeed.
pub(super) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| RETRYABLE.contains(&c.code()))
}

/// Which qupid error kind a driver error is.
pub(super) fn classify(e: &tokio_postgres::Error) -> ErrorKind {
    if let Some(db) = e.as_db_error() {
        return classify_db(db);
    }
    // Retrying does not make a certificate trusted.
    if tls_failure(e).is_some() {
        return ErrorKind::Config;
    }
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    // The driver's connection and timeout errors have no public kind; their messages do.
    let text = e.to_string();
    if e.is_closed()
        || io
        || text.starts_with("error connecting to server")
        || text.starts_with("error communicating with the server")
        || text.starts_with("timeout waiting for server")
    {
        return ErrorKind::Unavailable;
    }
    if text.starts_with("error deserializing column") || text.starts_with("invalid column") {
        // A column of an unexpected type: the table is not the one this build created.
        return ErrorKind::Corrupt;
    }
    if text.starts_with("authentication error") || text.starts_with("invalid configuration") {
        return ErrorKind::Config;
    }
    ErrorKind::Ledger
}

fn classify_db(db: &DbError) -> ErrorKind {
    let code = db.code().code();
    match code {
        // Lost or refused connections, a server shutting down or starting, out of
        // connections or resources, and conflicts that outlasted the internal retries.
        c if c.starts_with("08") || c.starts_with("53") => ErrorKind::Unavailable,
        "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01" | "55P03" => {
            ErrorKind::Unavailable
        }
        // Wrong credentials, a missing database, missing privileges: fix the settings.
        c if c.starts_with("28") => ErrorKind::Config,
        "3D000" | "42501" => ErrorKind::Config,
        // A table, column, schema or function of the namespace is missing or different.
        "42P01" | "42703" | "3F000" | "42883" | "42804" | "23502" | "23514" => ErrorKind::Corrupt,
        _ => ErrorKind::Ledger,
    }
}

/// Maps a driver error met while running `what` in `namespace` on the server at `url`.
/// What went wrong with TLS, if that is what failed: a certificate rustls refused, or a
/// server that does not speak TLS when `sslmode` requires it.
fn tls_failure(e: &tokio_postgres::Error) -> Option<String> {
    if e.to_string().contains("server does not support TLS") {
        return Some(
            "the server does not support TLS, which the url's sslmode requires".to_owned(),
        );
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
            s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            let hint = match tls {
                rustls::Error::InvalidCertificate(_) => {
                    "; with sslmode verify-ca or verify-full the server's certificate must \
                     chain to sslrootcert (or to the system's roots), and with verify-full \
                     also name the host"
                }
                _ => "",
            };
            return Some(format!("the TLS handshake failed: {tls}{hint}"));
        }
        source = s.source();
    }
    None
}

pub(super) fn map_pg(e: tokio_postgres::Error, what: &str, url: &str, namespace: &str) -> Error {
    let kind = classify(&e);
    if let Some(tls) = tls_failure(&e) {
        let message = format!("cannot connect to postgres at {url} during {what}: {tls}");
        return Error::with_source(kind, message, e);
    }
    let detail = describe(&e);
    let message = match kind {
        ErrorKind::Unavailable => {
            format!("postgres at {url} is unavailable during {what}: {detail}")
        }
        ErrorKind::Corrupt => format!(
            "the tables of postgres namespace {namespace:?} are not what this version of qupid \
             created (during {what}): {detail}"
        ),
        ErrorKind::Config => {
            format!("postgres at {url} refused {what} for namespace {namespace:?}: {detail}")
        }
        _ => format!("postgres refused {what} in namespace {namespace:?}: {detail}"),
    };
    Error::with_source(kind, message, e)
}

/// Maps an error from the connection pool (which wraps the driver's connection errors).
pub(super) fn map_pool(e: PoolError, what: &str, url: &str, namespace: &str) -> Error {
    match e {
        PoolError::Backend(e) => map_pg(e, what, url, namespace),
        PoolError::Timeout(t) => Error::with_source(
            ErrorKind::Unavailable,
            format!("postgres at {url} did not answer in time during {what} ({t:?} timeout)"),
            PoolError::Timeout(t),
        ),
        PoolError::Closed => Error::new(
            ErrorKind::Closed,
            format!("the postgres connection pool for {url} was closed"),
        ),
        other => Error::with_source(
            ErrorKind::Ledger,
            format!("cannot get a postgres connection to {url} during {what}: {other}"),
            other,
        ),
    }
}

/// The driver's message with the server's own text, which its `Display` leaves out.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

/// `url` with any password replaced by `***`.
pub(super) fn redact(url: &str) -> String {
    crate::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://127.0.0.1:5432/test"),
            "postgres://127.0.0.1:5432/test"
        );
        assert_eq!(
            redact("postgres://u:s3cret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(
            redact("postgresql://u:p@ss@h/db?sslmode=disable"),
            "postgresql://u:***@h/db?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://h/db?user=u&password=s3cret&x=1"),
            "postgres://h/db?user=u&password=***&x=1"
        );
        assert_eq!(
            redact("host=h user=u password=s3cret dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(redact("postgres://u@h/"), "postgres://u@h/");
        assert_eq!(redact("not a url"), "not a url");
    }
}
