//! Opening a ledger file: the builder, `sqlite://` URLs and the connections' settings.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::errors::File;
use super::writer::ConnThread;
use super::{read_only, schema, SqliteLedger};
use crate::clock::{Clock, MonotonicClock};
use crate::error::{Error, ErrorKind, Result};

/// The longest commit window accepted: past it, every write would wait noticeably.
const MAX_COMMIT_WINDOW: Duration = Duration::from_secs(1);

/// How hard SQLite works to make each commit survive a power loss (`PRAGMA synchronous`).
///
/// Either way the file is never corrupted, and a crash of the *process* loses nothing that
/// was committed (the commit is in the operating system's hands). The difference is a crash
/// of the *machine* (power loss, kernel panic):
///
/// | | each commit | after a power loss |
/// |---|---|---|
/// | [`Normal`](Synchronous::Normal) | written to the WAL, not synced | the last commits before the loss may be missing |
/// | [`Full`](Synchronous::Full) | the WAL is synced (fsync) before the caller hears back | nothing committed is missing |
///
/// A missing commit means work is done again (a completed key is Running again and its
/// lease expires: at-least-once), and the tokens of the lost commits may be handed out again.
/// Choose `Full` when a power loss must not repeat work, or when your store fences saves by
/// token. Group commit shares one fsync among every request of a group, so `Full` costs one
/// fsync per group, not per key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Synchronous {
    /// `PRAGMA synchronous = NORMAL`: fast; durable across process crashes, not power loss.
    #[default]
    Normal,
    /// `PRAGMA synchronous = FULL`: every commit is synced to disk before it is answered.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Settings for opening a [`SqliteLedger`]; made by [`SqliteLedger::builder`] or
/// [`SqliteBuilder::from_url`].
///
/// ## Defaults
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`synchronous`](SqliteBuilder::synchronous) | [`Synchronous::Normal`] | durable across process crashes; see [`Synchronous`] for power loss |
/// | [`clock`](SqliteBuilder::clock) | [`MonotonicClock`] | leases expire by wall-clock time, so they expire across restarts too |
/// | [`commit_window`](SqliteBuilder::commit_window) | 0 | a group holds what is waiting when the previous commit ends; no added latency |
/// | [`busy_timeout`](SqliteBuilder::busy_timeout) | 5 s | how long to wait for another process's write lock before [`ErrorKind::Unavailable`] |
/// | [`read_only`](SqliteBuilder::read_only) | `false` | opens read-write: creates the file and its schema, migrates an older one |
///
/// ```no_run
/// use std::time::Duration;
/// use qupid::ledger::sqlite::{SqliteLedger, Synchronous};
///
/// # async fn example() -> qupid::Result<()> {
/// let ledger = SqliteLedger::builder("state/ledger.db")
///     .synchronous(Synchronous::Full)
///     .commit_window(Duration::from_millis(2))
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteBuilder {
    path: PathBuf,
    synchronous: Synchronous,
    clock: Option<Arc<dyn Clock>>,
    commit_window: Duration,
    busy_timeout: Duration,
    read_only: bool,
}

impl SqliteBuilder {
    pub(super) fn new(path: PathBuf) -> SqliteBuilder {
        SqliteBuilder {
            path,
            synchronous: Synchronous::Normal,
            clock: None,
            commit_window: Duration::ZERO,
            busy_timeout: Duration::from_secs(5),
            read_only: false,
        }
    }

    /// A builder from a URL: `sqlite://PATH`, or `sqlite:PATH`, with optional query
    /// parameters `synchronous=normal|full`, `busy_timeout_ms=N` and `commit_window_ms=N`.
    ///
    /// `sqlite://ledger.db` is relative to the working directory and `sqlite:///var/lib/x.db`
    /// is absolute; `%XX` escapes are decoded (`%20` for a space).
    ///
    /// ```
    /// use qupid::ledger::sqlite::SqliteBuilder;
    ///
    /// assert!(SqliteBuilder::from_url("sqlite:///var/lib/app/ledger.db?synchronous=full").is_ok());
    /// assert!(SqliteBuilder::from_url("redis://localhost").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] if the URL is not a `sqlite:` URL, has no path, names SQLite's
    /// `:memory:` database (use [`MemoryLedger`](crate::MemoryLedger)), or has an unknown or
    /// malformed parameter.
    pub fn from_url(url: &str) -> Result<SqliteBuilder> {
        let config = |m: String| Error::new(ErrorKind::Config, m);
        let rest = url
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("sqlite:"))
            .map(|_| &url[7..])
            .ok_or_else(|| config(format!("expected a sqlite:// URL, found {url:?}")))?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = percent_decode(path).ok_or_else(|| {
            config(format!(
                "expected a UTF-8 path in {url:?}, found bad escapes"
            ))
        })?;
        if path.is_empty() {
            return Err(config(format!(
                "expected a file path in {url:?}, found none"
            )));
        }
        if path.starts_with(":memory:") {
            return Err(config(format!(
                "expected a file path in {url:?}, found SQLite's in-memory database: use \
                 MemoryLedger for a ledger that needs no file"
            )));
        }
        let mut builder = SqliteBuilder::new(PathBuf::from(path));
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let millis = || {
                value
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| {
                        config(format!(
                        "expected a number of milliseconds for {name} in {url:?}, found {value:?}"
                    ))
                    })
            };
            match name {
                "synchronous" => {
                    builder.synchronous = match value.to_ascii_lowercase().as_str() {
                        "normal" => Synchronous::Normal,
                        "full" => Synchronous::Full,
                        _ => {
                            return Err(config(format!(
                                "expected synchronous=normal or synchronous=full in {url:?}, \
                                 found {value:?}"
                            )))
                        }
                    }
                }
                "busy_timeout_ms" => builder.busy_timeout = millis()?,
                "commit_window_ms" => builder.commit_window = millis()?,
                _ => {
                    return Err(config(format!(
                        "expected the parameters synchronous, busy_timeout_ms or \
                         commit_window_ms in {url:?}, found {name:?}"
                    )))
                }
            }
        }
        Ok(builder)
    }

    /// How hard each commit works to survive a power loss. See [`Synchronous`].
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The clock leases expire by. The default, [`MonotonicClock`], starts from the
    /// wall-clock time, so a lease taken before a restart expires at the right time after it;
    /// processes sharing one file should have roughly synchronised clocks (NTP).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// How long the writer waits for more requests before committing a group (at most 1 s).
    ///
    /// Zero (the default) commits at once whatever is waiting; requests that arrive during a
    /// commit form the next group, so busy pipelines group without waiting. A small window
    /// (1–2 ms) makes bigger groups when each commit is expensive ([`Synchronous::Full`]
    /// with many concurrent callers), but every group then waits for the whole window, so a
    /// lone caller pays it on each call.
    pub fn commit_window(mut self, window: Duration) -> Self {
        self.commit_window = window;
        self
    }

    /// How long to wait for a lock held by another connection (another process sharing the
    /// file) before failing with a transient [`ErrorKind::Unavailable`] error.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Opens the file read-only, to look and never write: no writer thread, no write
    /// connection, and nothing in the file changes — it is not created, its schema is not
    /// created or migrated, and its journal mode stays as it is (see
    /// [Read-only ledgers](crate::ledger#read-only-ledgers)).
    ///
    /// [`open`](SqliteBuilder::open) then fails with [`ErrorKind::NotFound`] where there is no
    /// ledger (no file, an empty file, another program's SQLite database), and with
    /// [`ErrorKind::Corrupt`] for a file that is not SQLite at all or holds a ledger of a newer
    /// qupid. A ledger of an older schema would be read as it is, without a migration. The
    /// ledger's write methods (`offer`, `start`,
    /// `renew`, `complete`, `fail`, `release`, `remove`, `retry`, `purge`) answer
    /// [`ErrorKind::ReadOnly`] and change nothing; `get`, `list`, `stats` and `now` read,
    /// seeing what writers (in this process or others) commit.
    ///
    /// A read-only file, or one in a read-only directory, can be read: a file in WAL mode is
    /// read through its `-wal` and `-shm` files, read-only ones included. When those are
    /// missing and the directory is read-only, the file is read alone (SQLite's
    /// `immutable=1`), since no writer can be running; if a `-wal` with commits is there
    /// without its `-shm`, `open` fails with [`ErrorKind::Ledger`] rather than read stale
    /// data. Settings for writes ([`synchronous`](SqliteBuilder::synchronous),
    /// [`commit_window`](SqliteBuilder::commit_window)) are ignored.
    ///
    /// ```no_run
    /// use qupid::ledger::sqlite::SqliteLedger;
    /// use qupid::LedgerAdmin;
    ///
    /// # async fn example() -> qupid::Result<()> {
    /// let ledger = SqliteLedger::builder("state/ledger.db").read_only(true).open().await?;
    /// println!("{:?}", ledger.stats().await?);
    /// # Ok(()) }
    /// ```
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Opens (or creates) the file and starts the ledger's writer and reader threads; only
    /// the reader thread if [`read_only`](SqliteBuilder::read_only).
    ///
    /// A new file gets the current schema; an older one is migrated; the file is switched to
    /// WAL mode. The work happens on the ledger's own threads, so it does not block the
    /// async runtime.
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::Config`]: the path is empty or a directory, or the commit window is
    ///   longer than 1 s.
    /// - [`ErrorKind::Ledger`]: the file cannot be created or written (missing or read-only
    ///   directory, read-only file), or SQLite refuses WAL mode.
    /// - [`ErrorKind::Corrupt`]: the file is not a SQLite database, or was written by a newer
    ///   qupid (its schema version is newer than this build reads).
    /// - [`ErrorKind::Unavailable`] (transient): another connection kept the file locked past
    ///   the busy timeout.
    /// - Read-only: [`ErrorKind::NotFound`] where there is no ledger (no file, an empty file,
    ///   a SQLite database without qupid's tables), [`ErrorKind::Corrupt`] as above, and
    ///   [`ErrorKind::Ledger`] for a file this process cannot read (see
    ///   [`read_only`](SqliteBuilder::read_only)).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the threads once they have opened the file; a schema
    /// migration already started is either committed whole or not at all.
    pub async fn open(self) -> Result<SqliteLedger> {
        let config = |m: String| Error::new(ErrorKind::Config, m);
        if self.path.as_os_str().is_empty() {
            return Err(config(
                "expected a file path for the sqlite ledger, found an empty path".into(),
            ));
        }
        if self.path.is_dir() {
            return Err(config(format!(
                "expected a file path for the sqlite ledger, found a directory: {}",
                self.path.display()
            )));
        }
        if self.commit_window > MAX_COMMIT_WINDOW {
            return Err(config(format!(
                "expected a commit window of at most {MAX_COMMIT_WINDOW:?}, found {:?}",
                self.commit_window
            )));
        }
        if self.read_only {
            if let Err(e) = std::fs::metadata(&self.path) {
                if e.kind() == std::io::ErrorKind::NotFound {
                    return Err(read_only::missing(&self.path));
                }
            }
        }
        let file = Arc::new(File {
            path: self.path,
            busy_timeout: self.busy_timeout,
        });
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(MonotonicClock::new()));
        if self.read_only {
            let version = Arc::new(AtomicI64::new(0));
            let found = Arc::clone(&version);
            let (reader, ready) = ConnThread::reader(file.clone(), clock.clone(), move |f| {
                read_only::open(f, &found)
            })?;
            reader.ready(ready).await?;
            return Ok(SqliteLedger::new(
                file,
                clock,
                None,
                reader,
                self.synchronous,
                self.commit_window,
                version.load(Ordering::Relaxed),
            ));
        }
        let synchronous = self.synchronous;
        let (writer, ready) =
            ConnThread::writer(file.clone(), clock.clone(), self.commit_window, move |f| {
                open_writer(f, synchronous)
            })?;
        writer.ready(ready).await?;
        // The reader opens after the writer has created the schema.
        let (reader, ready) = ConnThread::reader(file.clone(), clock.clone(), open_reader)?;
        reader.ready(ready).await?;
        Ok(SqliteLedger::new(
            file,
            clock,
            Some(writer),
            reader,
            synchronous,
            self.commit_window,
            schema::VERSION,
        ))
    }
}

/// `%XX` escapes decoded; `None` if one is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// Flags without `SQLITE_OPEN_URI`: the path is a path, even if it starts with `file:`.
fn flags(create: bool) -> OpenFlags {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        flags
    }
}

fn connect(file: &File, create: bool) -> Result<Connection> {
    let conn = Connection::open_with_flags(file.path(), flags(create))
        .map_err(|e| file.sql(e, "opening"))?;
    conn.busy_timeout(file.busy_timeout)
        .map_err(|e| file.sql(e, "setting the busy timeout"))?;
    // SQLite quietly opens a file it may not write read-only; say so now, clearly.
    if conn
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(|e| file.sql(e, "opening"))?
    {
        return Err(Error::new(
            ErrorKind::Ledger,
            format!(
                "cannot write to {}: the file is read-only for this process (check its \
                 permissions)",
                file.path().display()
            ),
        ));
    }
    Ok(conn)
}

/// Runs `f` again while it finds the file busy, until the busy timeout has passed.
///
/// SQLite's busy handler does not cover every wait: when two connections both hold a read
/// lock and both want to write (two processes switching one new file to WAL mode at once),
/// one is told "busy" at once rather than deadlock. Trying again a little later succeeds.
fn patiently<T>(file: &File, mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = Instant::now() + file.busy_timeout;
    loop {
        match f() {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2 + fastrand::u64(..8)));
            }
            other => return other,
        }
    }
}

fn open_writer(file: &File, synchronous: Synchronous) -> Result<Connection> {
    let conn = connect(file, true)?;
    let mode: String = patiently(file, || {
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
    })
    .map_err(|e| file.sql(e, "switching to WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::new(
            ErrorKind::Ledger,
            format!(
                "expected {} to switch to WAL mode, found journal mode {mode:?} (is it on a \
                 file system without shared memory, like a network share?)",
                file.path().display()
            ),
        ));
    }
    conn.pragma_update(None, "synchronous", synchronous.pragma())
        .map_err(|e| file.sql(e, "setting synchronous"))?;
    // Every statement the writer runs stays prepared (rusqlite keeps 16 by default).
    conn.set_prepared_statement_cache_capacity(64);
    schema::prepare(&conn).map_err(|f| file.error(f, "checking the schema"))?;
    Ok(conn)
}

fn open_reader(file: &File) -> Result<Connection> {
    let conn = connect(file, false)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| file.sql(e, "opening the read connection"))?;
    Ok(conn)
}

impl SqliteLedger {
    /// The path of the ledger's file.
    pub fn path(&self) -> &Path {
        self.file().path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_path_and_settings() {
        let b = SqliteBuilder::from_url(
            "sqlite:///var/lib/a%20b.db?synchronous=FULL&busy_timeout_ms=250",
        )
        .expect("valid");
        assert_eq!(b.path, PathBuf::from("/var/lib/a b.db"));
        assert_eq!(b.synchronous, Synchronous::Full);
        assert_eq!(b.busy_timeout, Duration::from_millis(250));
        let b = SqliteBuilder::from_url("SQLITE://rel/x.db?commit_window_ms=2").expect("valid");
        assert_eq!(b.path, PathBuf::from("rel/x.db"));
        assert_eq!(b.commit_window, Duration::from_millis(2));
        assert_eq!(
            SqliteBuilder::from_url("sqlite:x.db").expect("valid").path,
            PathBuf::from("x.db")
        );
    }

    #[test]
    fn bad_urls_say_what_was_expected() {
        for (url, says) in [
            ("postgres://x", "expected a sqlite:// URL"),
            ("sqlite://", "found none"),
            ("sqlite::memory:", "MemoryLedger"),
            ("sqlite://x.db?mode=rwc", "\"mode\""),
            ("sqlite://x.db?synchronous=off", "\"off\""),
            ("sqlite://x.db?busy_timeout_ms=soon", "milliseconds"),
            ("sqlite://x%zz.db", "bad escapes"),
            ("sq", "expected a sqlite:// URL"),
        ] {
            let err = SqliteBuilder::from_url(url).expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(err.to_string().contains(says), "{url}: {err}");
        }
    }
}
