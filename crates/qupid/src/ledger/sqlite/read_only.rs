//! Opening a ledger file read-only: one connection that never writes, finds out what the
//! file holds, and reads a WAL-mode file even where it may not create the WAL's files.
//!
//! A read-only connection (`SQLITE_OPEN_READONLY`) never creates the file, never creates or
//! migrates a schema and never changes the journal mode. Reading a file in WAL mode takes its
//! shared-memory index, `FILE-shm`: SQLite creates it (with an empty `FILE-wal`) when they are
//! missing and the directory is writable, which is how every reader of a WAL file works, and
//! reads through them when they exist, writable or not (from SQLite 3.22). Only when they are
//! missing *and* cannot be created (a read-only directory) does it fail. Then, if there is no
//! write-ahead log with commits in it, the file holds everything on its own and no writer is
//! running (a writer keeps both files while it runs), so it is opened again with
//! `immutable=1`, which reads the file alone and takes no locks. If a non-empty `FILE-wal` is
//! there (a writer stopped without a checkpoint, or one running as a user who may write the
//! directory without its `-shm`), reading without it would miss commits: that is an error
//! saying so, never stale data.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::errors::{Fault, File};
use super::schema::{self, Found};
use crate::error::{Error, ErrorKind, Result};

/// The error for a file that is not there, said before any thread starts.
pub(super) fn missing(path: &Path) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!(
            "no qupid ledger here: there is no file {} (a read-only open never creates one)",
            path.display()
        ),
    )
}

/// Opens `file` read-only and checks that it holds a ledger this build reads; stores the
/// ledger's schema version in `version`.
///
/// # Errors
///
/// [`ErrorKind::NotFound`] if the file holds no ledger (empty, or another program's
/// database); [`ErrorKind::Corrupt`] if it is not a SQLite database or holds a ledger of a
/// newer qupid; [`ErrorKind::Ledger`] if it cannot be read.
pub(super) fn open(file: &File, version: &AtomicI64) -> Result<Connection> {
    let conn = connect(file, false)?;
    let found = match schema::inspect(&conn) {
        Err(Fault::Sql(e)) if needs_wal_files(&e) => {
            let wal = suffixed(file.path(), "-wal");
            if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                return Err(Error::with_source(
                    ErrorKind::Ledger,
                    format!(
                        "cannot read {path} read-only: its write-ahead log {wal} holds commits, \
                         and reading them needs {shm}, which this process may not create (is \
                         the directory read-only?); read it as a user who may write the \
                         directory, or let a writer checkpoint the file",
                        path = file.path().display(),
                        wal = wal.display(),
                        shm = suffixed(file.path(), "-shm").display(),
                    ),
                    e,
                ));
            }
            drop(conn);
            // No log with commits: the file holds everything, and no writer is running.
            let conn = connect(file, true)?;
            let found = schema::inspect(&conn).map_err(|f| file.error(f, "reading the schema"))?;
            return accept(file, found, version).map(|()| conn);
        }
        other => other.map_err(|f| file.error(f, "reading the schema"))?,
    };
    accept(file, found, version).map(|()| conn)
}

/// `Ok` for a ledger (its version stored in `version`), [`ErrorKind::NotFound`] otherwise.
fn accept(file: &File, found: Found, version: &AtomicI64) -> Result<()> {
    let path = file.path().display();
    let what = match found {
        Found::Ledger(v) => {
            version.store(v, Ordering::Relaxed);
            return Ok(());
        }
        Found::Nothing if std::fs::metadata(file.path()).is_ok_and(|m| m.len() == 0) => {
            format!("{path} is empty")
        }
        Found::Nothing => format!("{path} is a SQLite database with no tables"),
        Found::Foreign => format!(
            "{path} is a SQLite database without qupid's tables (qupid_meta, qupid_entries)"
        ),
    };
    Err(Error::new(
        ErrorKind::NotFound,
        format!("no qupid ledger here: {what}; nothing was changed"),
    ))
}

/// Whether SQLite failed for want of the WAL's files (`-shm`, `-wal`) it could not create.
fn needs_wal_files(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly)
    )
}

/// A read-only connection to `file`; with `immutable`, one that reads the file alone, with no
/// locks and no WAL files.
fn connect(file: &File, immutable: bool) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if immutable {
        let uri = immutable_uri(file.path()).map_err(|e| {
            Error::with_source(
                ErrorKind::Ledger,
                format!("cannot read {}: {e}", file.path().display()),
                e,
            )
        })?;
        Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
    } else {
        // Without SQLITE_OPEN_URI: the path is a path, even if it starts with `file:`.
        Connection::open_with_flags(file.path(), flags)
    }
    .map_err(|e| file.sql(e, "opening read-only"))?;
    conn.busy_timeout(file.busy_timeout)
        .map_err(|e| file.sql(e, "setting the busy timeout"))?;
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| file.sql(e, "opening read-only"))?;
    Ok(conn)
}

/// `path` with `suffix` appended to its file name, as SQLite names the WAL's files.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// A `file:` URI of `path` (made absolute) with `immutable=1`: every byte that is not
/// unreserved is `%XX`-escaped, so `?`, `#` and `%` in a name stay part of it.
fn immutable_uri(path: &Path) -> std::io::Result<String> {
    let abs = std::path::absolute(path)?;
    // An empty authority (`file:///…`), so a path starting with `//` is not read as a host.
    let mut uri = String::from("file://");
    if !abs.as_os_str().as_encoded_bytes().starts_with(b"/") {
        // A Windows path (`C:\…`) is written `file:///C:/…`.
        uri.push('/');
    }
    for &b in abs.as_os_str().as_encoded_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                uri.push(char::from(b));
            }
            b'\\' if cfg!(windows) => uri.push('/'),
            b => {
                let _ = write!(uri, "%{b:02X}");
            }
        }
    }
    uri.push_str("?immutable=1");
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn uris_escape_what_sqlite_would_read_as_syntax() {
        assert_eq!(
            immutable_uri(Path::new("/var/a b/x?y#z%.db")).expect("uri"),
            "file:///var/a%20b/x%3Fy%23z%25.db?immutable=1"
        );
        assert_eq!(
            immutable_uri(Path::new("//host/x.db")).expect("uri"),
            "file:////host/x.db?immutable=1"
        );
        let rel = immutable_uri(Path::new("rel.db")).expect("uri");
        assert!(
            rel.starts_with("file:///") && rel.ends_with("/rel.db?immutable=1"),
            "{rel}"
        );
    }

    #[test]
    fn wal_files_are_named_after_the_file() {
        assert_eq!(
            suffixed(Path::new("dir/ledger.db"), "-wal"),
            PathBuf::from("dir/ledger.db-wal")
        );
    }
}
