//! Turning SQLite's errors into qupid's, with the file they concern.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::ErrorCode;

use crate::error::{Error, ErrorKind};
use crate::ledger::Unreadable;

/// What went wrong inside the ledger's threads, before it is told in qupid's terms.
#[derive(Debug)]
pub(super) enum Fault {
    /// SQLite (or rusqlite) failed.
    Sql(rusqlite::Error),
    /// The file holds something this build cannot read.
    Corrupt(String),
    /// One key's row does not decode. The transitions answer it for that key
    /// ([`Unreadable`]); the calls that cannot (reads, `remove` and `retry` of a row whose
    /// state is unknown) turn it into [`Fault::Corrupt`] naming the key.
    Unreadable(Unreadable),
}

impl From<rusqlite::Error> for Fault {
    fn from(e: rusqlite::Error) -> Self {
        Fault::Sql(e)
    }
}

/// A `Result` of the ledger's threads.
pub(super) type Res<T> = std::result::Result<T, Fault>;

/// The ledger file, for error messages and for opening connections.
#[derive(Debug)]
pub(super) struct File {
    pub(super) path: PathBuf,
    pub(super) busy_timeout: Duration,
}

impl File {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// `fault`, which happened while `doing` something, as a qupid [`Error`].
    pub(super) fn error(&self, fault: Fault, doing: &str) -> Error {
        match fault {
            Fault::Sql(e) => self.sql(e, doing),
            Fault::Corrupt(what) => Error::new(
                ErrorKind::Corrupt,
                format!("{}: {what} (while {doing})", self.path.display()),
            ),
            Fault::Unreadable(u) => Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{}: a row holds an {u} (while {doing})",
                    self.path.display()
                ),
            ),
        }
    }

    /// A rusqlite error, which happened while `doing` something, as a qupid [`Error`] whose
    /// source is `e`.
    pub(super) fn sql(&self, e: rusqlite::Error, doing: &str) -> Error {
        let path = self.path.display();
        let (kind, message) = match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => (
                ErrorKind::Unavailable,
                format!(
                    "{path} is locked by another connection: gave up {doing} (the busy \
                     timeout is {:?})",
                    self.busy_timeout
                ),
            ),
            Some(ErrorCode::NotADatabase) => (
                ErrorKind::Corrupt,
                format!("{path} is not a SQLite database: expected a qupid ledger file"),
            ),
            Some(ErrorCode::DatabaseCorrupt) => (
                ErrorKind::Corrupt,
                format!("{path} is a corrupt SQLite database (while {doing})"),
            ),
            Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => (
                ErrorKind::Ledger,
                format!(
                    "cannot write to {path} (while {doing}): the file and its directory must \
                     exist or be creatable, and be writable"
                ),
            ),
            Some(
                ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed,
            ) => (
                ErrorKind::Unavailable,
                format!("{doing} failed on {path}: {e}"),
            ),
            _ => match e {
                rusqlite::Error::NulError(_) => (
                    ErrorKind::Config,
                    format!("expected a file path without NUL bytes, found {path:?}"),
                ),
                _ => (ErrorKind::Ledger, format!("{doing} failed on {path}: {e}")),
            },
        };
        Error::with_source(kind, message, e)
    }
}

/// Data that this build cannot read: `what`, said in the error message.
pub(super) fn corrupt(what: impl fmt::Display) -> Fault {
    Fault::Corrupt(what.to_string())
}

/// A row that does not decode: `found` says what it holds, for [`Unreadable::found`].
pub(super) fn unreadable(found: impl Into<String>) -> Fault {
    Fault::Unreadable(Unreadable::new(found.into()))
}

/// `fault` as a whole-call error naming `key`, for the calls that cannot answer an
/// unreadable row for its key alone.
pub(super) fn of_key(fault: Fault, key: &str) -> Fault {
    match fault {
        Fault::Unreadable(u) => corrupt(format!(
            "key {key:?} holds an {u}; `remove` with force deletes it"
        )),
        other => other,
    }
}

/// The same error again, for the other waiters of one failed group (an error's source cannot
/// be cloned, so the copies carry only its kind and message).
pub(super) fn copy(e: &Error) -> Error {
    Error::new(e.kind(), e.to_string())
}
