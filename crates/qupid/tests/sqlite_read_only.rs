//! A SQLite ledger opened read-only: it writes nothing to any file (not even to make a ledger
//! where there is none, or to switch the journal mode), says "no qupid ledger here" where
//! there is none, refuses every write, reads a ledger as it is, reads a file and a
//! directory this process may not write, and sees what a writer commits meanwhile.
#![cfg(all(feature = "sqlite", unix))]

use std::path::{Path, PathBuf};
use std::process::Command;

use qupid::ledger::{Claim, Failure, ListQuery, SqliteLedger, State, Token};
use qupid::{ErrorKind, Keep, Key, Ledger, LedgerAdmin, Offer, Policy, Retention};
use tempfile::TempDir;

fn key(s: &str) -> Key {
    Key::new(s).expect("valid key")
}

fn temp() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("ledger.db");
    (dir, path)
}

async fn read_only(path: &Path) -> qupid::Result<SqliteLedger> {
    SqliteLedger::builder(path).read_only(true).open().await
}

/// Every file in `dir` with its bytes, to compare before and after.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("read the folder")
        .map(|e| {
            let e = e.expect("an entry");
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("read a file"))
        })
        .collect();
    files.sort();
    files
}

fn names(dir: &Path) -> Vec<String> {
    snapshot(dir).into_iter().map(|(n, _)| n).collect()
}

/// A ledger file with keys in every state, closed (so its log is checkpointed into it).
async fn filled(path: &Path) {
    let l = SqliteLedger::open(path).await.expect("create");
    let p = Policy::default().max_attempts(1);
    let offers: Vec<Offer> = ["a", "b", "c", "d"]
        .iter()
        .map(|k| Offer::new(key(k)))
        .collect();
    let claims: Vec<Claim> = l
        .offer(&p, &offers)
        .await
        .expect("offer")
        .iter()
        .zip(&offers)
        .map(|(o, offer)| Claim {
            key: offer.key.clone(),
            token: o.lease().expect("accepted").token,
        })
        .collect();
    l.start(&p, &claims[1..]).await.expect("start");
    l.complete(&claims[2..3]).await.expect("complete");
    let failure = Failure {
        claim: claims[3].clone(),
        error: "boom".into(),
    };
    l.fail(&p, &[failure]).await.expect("fail");
}

fn counts(s: qupid::ledger::Stats) -> [u64; 4] {
    [s.queued, s.running, s.completed, s.dead]
}

/// The file's journal mode as its header says: 1 rollback journal, 2 WAL (bytes 18 and 19).
fn header_journal(path: &Path) -> (u8, u8) {
    let bytes = std::fs::read(path).expect("read");
    (bytes[18], bytes[19])
}

#[tokio::test]
async fn a_missing_file_is_not_found_and_not_created() {
    let (dir, path) = temp();
    let err = read_only(&path).await.expect_err("no file");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("no qupid ledger here"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
}

#[tokio::test]
async fn an_empty_file_stays_empty() {
    let (dir, path) = temp();
    std::fs::write(&path, b"").expect("an empty file");
    let err = read_only(&path).await.expect_err("an empty file");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("is empty") && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);
    assert_eq!(
        names(dir.path()),
        ["ledger.db"],
        "no journal, no -wal, no -shm"
    );
}

/// Another program's database, in rollback-journal mode: not a ledger, and not one byte of it
/// changes — no qupid tables, no WAL switch, no `-wal` file.
#[tokio::test]
async fn another_programs_database_is_not_found_and_untouched() {
    let (dir, path) = temp();
    {
        let raw = rusqlite::Connection::open(&path).expect("raw");
        raw.execute_batch(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);
             INSERT INTO invoices (total) VALUES (12.5), (7.25);",
        )
        .expect("another program's tables");
    }
    let before = snapshot(dir.path());
    let err = read_only(&path).await.expect_err("not a ledger");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("without qupid's tables"), "{msg}");
    assert_eq!(
        snapshot(dir.path()),
        before,
        "byte for byte, and no new file"
    );
    assert_eq!(
        header_journal(&path),
        (1, 1),
        "still a rollback-journal file"
    );
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_corrupt_and_untouched() {
    let (dir, path) = temp();
    std::fs::write(
        &path,
        "a note, not a database, long enough to have a header\n",
    )
    .expect("write");
    let before = snapshot(dir.path());
    let err = read_only(&path).await.expect_err("not sqlite");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(snapshot(dir.path()), before);
}

#[tokio::test]
async fn a_ledger_reads_and_every_write_is_refused() {
    let (_dir, path) = temp();
    filled(&path).await;
    let before = std::fs::read(&path).expect("read");
    let l = read_only(&path).await.expect("opens read-only");
    assert!(l.is_read_only());
    assert_eq!(counts(l.stats().await.expect("stats")), [1, 1, 1, 1]);
    let page = l.list(&ListQuery::new(State::Dead)).await.expect("list");
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].last_error.as_deref(), Some("boom"));
    let got = l.get(&key("c")).await.expect("get").expect("a record");
    assert_eq!(got.state, State::Completed);
    l.now().await.expect("the clock");

    let p = Policy::default();
    let claim = Claim {
        key: key("b"),
        token: got.token,
    };
    let offers = [Offer::new(key("new"))];
    let purge = Retention {
        completed: Keep::newest(0),
        dead: Keep::newest(0),
    };
    let failure = Failure {
        claim: claim.clone(),
        error: "x".into(),
    };
    let refused: Vec<(&str, qupid::Error)> = vec![
        ("offer", l.offer(&p, &offers).await.expect_err("offer")),
        ("offer, empty", l.offer(&p, &[]).await.expect_err("offer")),
        (
            "offer_and_start",
            l.offer_and_start(&p, &offers)
                .await
                .expect_err("offer_and_start"),
        ),
        (
            "start",
            l.start(&p, std::slice::from_ref(&claim))
                .await
                .expect_err("start"),
        ),
        (
            "renew",
            l.renew(&p, std::slice::from_ref(&claim))
                .await
                .expect_err("renew"),
        ),
        (
            "complete",
            l.complete(std::slice::from_ref(&claim))
                .await
                .expect_err("complete"),
        ),
        ("fail", l.fail(&p, &[failure]).await.expect_err("fail")),
        (
            "release",
            l.release(std::slice::from_ref(&claim))
                .await
                .expect_err("release"),
        ),
        (
            "remove",
            l.remove(&[key("a")], true).await.expect_err("remove"),
        ),
        ("retry", l.retry(&[key("d")]).await.expect_err("retry")),
        ("purge", l.purge(&purge).await.expect_err("purge")),
        (
            "purge, keep all",
            l.purge(&Retention::default()).await.expect_err("purge"),
        ),
    ];
    for (call, err) in refused {
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "{call}: {err}");
        assert!(!err.is_transient(), "{call}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{call}: {err}"
        );
    }
    assert_eq!(counts(l.stats().await.expect("stats")), [1, 1, 1, 1]);
    drop(l);
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "the file is unchanged"
    );
}

/// A ledger whose journal mode was set back to a rollback journal by hand stays so: only a
/// read-write open switches it to WAL.
#[tokio::test]
async fn the_journal_mode_is_left_as_it_is() {
    let (_dir, path) = temp();
    filled(&path).await;
    {
        let raw = rusqlite::Connection::open(&path).expect("raw");
        let mode: String = raw
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .expect("back to a rollback journal");
        assert_eq!(mode, "delete");
    }
    let before = std::fs::read(&path).expect("read");
    let l = read_only(&path).await.expect("opens");
    assert_eq!(counts(l.stats().await.expect("stats")), [1, 1, 1, 1]);
    drop(l);
    assert_eq!(std::fs::read(&path).expect("read"), before);
    assert_eq!(header_journal(&path), (1, 1));
    drop(SqliteLedger::open(&path).await.expect("read-write"));
    assert_eq!(
        header_journal(&path),
        (2, 2),
        "a read-write open switches to WAL"
    );
}

/// Rows as another process wrote them: one key in each state, the running one's lease
/// long expired.
const ROWS: &str = "
UPDATE qupid_meta SET value = 4 WHERE name = 'last_token';
INSERT INTO qupid_entries VALUES
    (x'71', 0, 0, 0, 0, 1, 9999999999999, NULL, NULL, NULL),
    (x'72', 1, 0, 1, 0, 2, 1, NULL, NULL, NULL),
    (x'63', 2, 0, 1, 0, 3, 1000, x'7631', NULL, NULL),
    (x'64', 3, 0, 3, 0, 4, 2000, NULL, NULL, 'boom');
";

/// A ledger file is read as it is, and not changed: the counts, pages and records are
/// right (the expired lease too).
#[tokio::test]
async fn a_ledger_is_read_as_it_is() {
    let (_dir, path) = temp();
    drop(SqliteLedger::open(&path).await.expect("create"));
    {
        let raw = rusqlite::Connection::open(&path).expect("raw");
        raw.execute_batch(ROWS).expect("rows");
        raw.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpoint");
    }
    let before = std::fs::read(&path).expect("read");
    let l = read_only(&path).await.expect("opens read-only");
    let stats = l.stats().await.expect("stats");
    assert_eq!(counts(stats), [1, 1, 1, 1]);
    assert_eq!(stats.expired, 1, "the running key's lease expired long ago");
    for (state, k) in [
        (State::Queued, "q"),
        (State::Running, "r"),
        (State::Completed, "c"),
        (State::Dead, "d"),
    ] {
        let page = l.list(&ListQuery::new(state)).await.expect("list");
        let keys: Vec<&str> = page.records.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, [k], "{state:?}");
    }
    let c = l.get(&key("c")).await.expect("get").expect("a record");
    assert_eq!(
        (c.token, c.version.as_ref().map(|v| v.as_str())),
        (Token::new(3), Some("v1"))
    );
    drop(l);
    assert_eq!(std::fs::read(&path).expect("read"), before, "unchanged");
}

#[tokio::test]
async fn a_newer_schema_is_corrupt() {
    let (_dir, path) = temp();
    drop(SqliteLedger::open(&path).await.expect("create"));
    let raw = rusqlite::Connection::open(&path).expect("raw");
    raw.execute(
        "UPDATE qupid_meta SET value = 99 WHERE name = 'schema_version'",
        [],
    )
    .expect("fake a newer schema");
    drop(raw);
    let err = read_only(&path).await.expect_err("newer");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("newer qupid"), "{err}");
}

/// A live ledger: a writer in this process keeps committing (to its WAL, not checkpointed
/// into the file), and a read-only ledger opened meanwhile sees each commit.
#[tokio::test]
async fn a_read_only_ledger_sees_what_a_writer_commits() {
    let (_dir, path) = temp();
    let writer = SqliteLedger::open(&path).await.expect("writer");
    let p = Policy::default();
    let offer = |k: &str| [Offer::new(key(k))];
    writer.offer(&p, &offer("one")).await.expect("offer");
    let reader = read_only(&path).await.expect("reader");
    assert_eq!(reader.stats().await.expect("stats").queued, 1);
    for (i, k) in ["two", "three", "four"].iter().enumerate() {
        writer.offer(&p, &offer(k)).await.expect("offer");
        assert_eq!(reader.stats().await.expect("stats").queued, i as u64 + 2);
        assert!(reader.get(&key(k)).await.expect("get").is_some());
    }
    drop(reader);
    writer
        .offer(&p, &offer("five"))
        .await
        .expect("the writer goes on");
}

/// Makes a path read-only for this process, root included, until dropped: the permission bits
/// (`chmod a-w`), and for root, whom those do not stop, the immutable attribute
/// (`chattr +i`, which needs root and a file system that has it, such as ext4 or tmpfs).
struct Locked {
    path: PathBuf,
    immutable: bool,
}

impl Locked {
    fn new(path: &Path) -> Locked {
        use std::os::unix::fs::PermissionsExt;
        let mode = if path.is_dir() { 0o555 } else { 0o444 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let immutable = is_root();
        if immutable {
            let status = Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .expect("run chattr (e2fsprogs): as root, permission bits do not stop writes");
            assert!(status.success(), "chattr +i {}", path.display());
        }
        Locked {
            path: path.to_owned(),
            immutable,
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
        }
        let mode = if self.path.is_dir() { 0o755 } else { 0o644 };
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode));
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A read-only ledger file in a writable folder is read (SQLite makes the WAL's `-shm` next to
/// it, as for any reader), and the file itself does not change.
#[tokio::test]
async fn a_read_only_file_is_read() {
    let (_dir, path) = temp();
    filled(&path).await;
    let before = std::fs::read(&path).expect("read");
    let _locked = Locked::new(&path);
    let err = SqliteLedger::open(&path)
        .await
        .expect_err("read-write needs a writable file");
    assert_eq!(err.kind(), ErrorKind::Ledger, "{err}");
    let l = read_only(&path).await.expect("opens read-only");
    assert_eq!(counts(l.stats().await.expect("stats")), [1, 1, 1, 1]);
    drop(l);
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

/// A cold ledger in a read-only folder, without its `-wal` and `-shm` (a writer closed it):
/// SQLite cannot make the `-shm` a WAL reader needs, so the file is read on its own, and
/// nothing is created.
#[tokio::test]
async fn a_cold_ledger_in_a_read_only_folder_is_read() {
    let (dir, path) = temp();
    filled(&path).await;
    assert_eq!(names(dir.path()), ["ledger.db"], "closed: no -wal, no -shm");
    let before = snapshot(dir.path());
    let (_file, _dir) = (Locked::new(&path), Locked::new(dir.path()));
    let l = read_only(&path).await.expect("opens read-only");
    assert_eq!(counts(l.stats().await.expect("stats")), [1, 1, 1, 1]);
    let got = l.get(&key("d")).await.expect("get").expect("a record");
    assert_eq!(got.last_error.as_deref(), Some("boom"));
    drop(l);
    assert_eq!(snapshot(dir.path()), before, "nothing created or changed");
}

/// Copies the ledger at `from` as a writer that stopped without a checkpoint left it: the file
/// and its `-wal` holding commits (copied while the writer still had it open).
async fn crashed_copy(from: &Path, to: &Path) -> SqliteLedger {
    let writer = SqliteLedger::open(from).await.expect("writer");
    let p = Policy::default();
    let offers: Vec<Offer> = (0..20).map(|i| Offer::new(key(&format!("k{i}")))).collect();
    writer.offer(&p, &offers).await.expect("offer");
    std::fs::copy(from, to).expect("copy the file");
    let mut wal = to.as_os_str().to_owned();
    wal.push("-wal");
    let mut from_wal = from.as_os_str().to_owned();
    from_wal.push("-wal");
    std::fs::copy(&from_wal, &wal).expect("copy its log");
    assert!(std::fs::metadata(&wal).expect("the log").len() > 0);
    writer
}

/// A `-wal` holding commits but no `-shm`, in a read-only folder: reading the file alone
/// would miss those commits, so the open fails and says why, rather than show stale data.
#[tokio::test]
async fn a_log_with_commits_and_no_shm_in_a_read_only_folder_is_an_error() {
    let (src, from) = temp();
    let dir = tempfile::tempdir().expect("a folder");
    let path = dir.path().join("copy.db");
    let _writer = crashed_copy(&from, &path).await;
    drop(src);
    assert_eq!(names(dir.path()), ["copy.db", "copy.db-wal"]);
    let before = snapshot(dir.path());
    let _locked = Locked::new(dir.path());
    let err = read_only(&path).await.expect_err("cannot read the log");
    assert_eq!(err.kind(), ErrorKind::Ledger, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("copy.db-wal") && msg.contains("copy.db-shm"),
        "{msg}"
    );
    assert_eq!(snapshot(dir.path()), before);
}

/// A `-wal` with commits and its `-shm`, both read-only, in a read-only folder (a writer
/// running as a user who may write them): read through them, commits included.
#[tokio::test]
async fn a_log_and_shm_that_are_read_only_are_read_through() {
    let (_src, from) = temp();
    let dir = tempfile::tempdir().expect("a folder");
    let path = dir.path().join("copy.db");
    let writer = crashed_copy(&from, &path).await;
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    let mut from_shm = from.as_os_str().to_owned();
    from_shm.push("-shm");
    std::fs::copy(&from_shm, &shm).expect("copy the -shm");
    drop(writer);
    let locked: Vec<Locked> = ["copy.db", "copy.db-wal", "copy.db-shm"]
        .iter()
        .map(|n| Locked::new(&dir.path().join(n)))
        .chain([Locked::new(dir.path())])
        .collect();
    let l = read_only(&path).await.expect("opens read-only");
    assert_eq!(
        l.stats().await.expect("stats").queued,
        20,
        "the log's commits are seen"
    );
    drop(l);
    drop(locked);
}
