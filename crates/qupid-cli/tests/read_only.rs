//! Looking never writes: `stats`, `list`, `show` (and `purge --dry-run`) open the ledger
//! read-only. Where there is no ledger they say "no qupid ledger here", naming the file or the
//! namespace, exit 2 and leave everything as it was — another program's SQLite file, an empty
//! file, a mistyped PostgreSQL namespace, a Redis namespace with no keys; they read a ledger
//! file and folder this process may not write. The commands that change records create as
//! before.

mod support;

use std::path::Path;

use predicates::str::contains;
use support::*;

/// The commands that only look.
const LOOKS: [&[&str]; 5] = [
    &["stats"],
    &["--json", "stats"],
    &["list", "--state", "dead"],
    &["show", "some/key"],
    &["purge", "--dead", "--older-than", "7d", "--dry-run"],
];

/// Runs every command that looks with `args` first, and checks that each exits 2 with one
/// line on stderr, "qupid: no qupid ledger here: …", containing each of `parts`.
fn no_ledger_here(args: &[&str], parts: &[&str]) {
    for look in LOOKS {
        let out = qupid()
            .args(args)
            .args(look)
            .assert()
            .code(2)
            .stdout("")
            .get_output()
            .clone();
        let err = String::from_utf8(out.stderr).expect("UTF-8");
        assert_eq!(err.lines().count(), 1, "{look:?}: {err}");
        assert!(
            err.starts_with("qupid: no qupid ledger here: "),
            "{look:?}: {err}"
        );
        for p in parts {
            assert!(err.contains(p), "{look:?}: expected {p:?} in {err}");
        }
    }
}

/// Every file in `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("read the folder")
        .map(|e| {
            let e = e.expect("an entry");
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("read"))
        })
        .collect();
    files.sort();
    files
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// Another program's SQLite file: no qupid tables are added, it is not switched to WAL, no
/// `-wal` appears; byte for byte as it was.
#[test]
fn another_programs_sqlite_file_is_left_alone() {
    let dir = tempfile::tempdir().expect("a folder");
    let path = dir.path().join("app.db");
    {
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        c.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO users (name) VALUES ('ada'), ('grace');",
        )
        .expect("another program's tables");
    }
    let before = snapshot(dir.path());
    let url = sqlite_url(&path);
    no_ledger_here(
        &["--ledger", &url],
        &[&path.display().to_string(), "without qupid's tables"],
    );
    assert_eq!(
        snapshot(dir.path()),
        before,
        "unchanged, and no -wal or -shm"
    );
}

/// An empty file stays empty for the commands that look; one that writes makes it a ledger,
/// as before.
#[test]
fn an_empty_file_stays_empty_until_a_command_writes() {
    let dir = tempfile::tempdir().expect("a folder");
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"").expect("an empty file");
    let url = sqlite_url(&path);
    no_ledger_here(
        &["--ledger", &url],
        &[&path.display().to_string(), "is empty"],
    );
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);
    assert_eq!(snapshot(dir.path()).len(), 1, "no journal, -wal or -shm");

    qupid()
        .args(["--ledger", &url, "remove", "k"])
        .assert()
        .code(1)
        .stderr(contains("no record"));
    assert!(
        std::fs::metadata(&path).expect("stat").len() > 0,
        "now a ledger"
    );
    qupid()
        .args(["--ledger", &url, "stats"])
        .assert()
        .success()
        .stdout(predicates::str::is_match(r"(?m)^total +0$").unwrap());
}

#[test]
fn a_missing_file_is_no_ledger_and_is_not_created() {
    let dir = tempfile::tempdir().expect("a folder");
    let path = dir.path().join("typo.db");
    let url = sqlite_url(&path);
    no_ledger_here(&["--ledger", &url], &[&path.display().to_string()]);
    qupid()
        .args(["--ledger", &url, "retry", "k"])
        .assert()
        .code(2)
        .stderr(contains("never creates a ledger"));
    assert!(!path.exists());
}

/// A ledger file this process may not write (root included: see `Locked`), in a folder it
/// may write: read through SQLite's `-shm`, the file unchanged.
#[test]
fn a_read_only_ledger_file_is_read() {
    let b = Backend::sqlite();
    b.fill();
    let path = b.path().expect("a file");
    let before = std::fs::read(&path).expect("read");
    let _locked = Locked::new(&path);
    look_at_the_filled_ledger(&b);
    assert_eq!(std::fs::read(&path).expect("read"), before);
    // A command that writes says why it cannot.
    b.qupid()
        .args(["retry", "dead/1"])
        .assert()
        .code(2)
        .stderr(contains("cannot write"));
}

/// A cold ledger (no `-wal`, no `-shm`: its writer closed it) in a folder this process may not
/// write: read without them, nothing created.
#[test]
fn a_ledger_in_a_read_only_folder_is_read() {
    let b = Backend::sqlite();
    b.fill();
    let path = b.path().expect("a file");
    let dir = path.parent().expect("a folder").to_owned();
    assert_eq!(
        snapshot(&dir).len(),
        1,
        "only the file: its writer closed it"
    );
    let before = snapshot(&dir);
    let _locked = (Locked::new(&path), Locked::new(&dir));
    look_at_the_filled_ledger(&b);
    assert_eq!(snapshot(&dir), before, "nothing created or changed");
}

/// `stats`, `list` and `show` of the filled ledger, as the commands tests expect.
fn look_at_the_filled_ledger(b: &Backend) {
    let v = json(
        &b.qupid()
            .args(["--json", "stats"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(v["total"], filled().total(), "{v}");
    b.qupid()
        .args(["list", "--state", "dead"])
        .assert()
        .success()
        .stdout(contains("dead/1"));
    b.qupid()
        .args(["show", "dead/1"])
        .assert()
        .success()
        .stdout(contains("disk full"));
}

/// A mistyped namespace: no schema is made for it. `remove` (a write) makes one, as before.
#[test]
fn a_mistyped_postgres_namespace_gets_no_schema() {
    let b = Backend::postgres();
    no_ledger_here(
        &["--ledger", &b.url, "--namespace", &b.namespace],
        &[
            &format!("{:?}", b.namespace),
            &format!("qupid_{}", b.namespace),
            &b.url,
        ],
    );
    assert!(!postgres_schema_exists(&b), "no schema was created");
    b.qupid().args(["remove", "k"]).assert().code(1);
    assert!(
        postgres_schema_exists(&b),
        "a write command creates it, as before"
    );
    b.qupid().arg("stats").assert().success();
}

fn postgres_schema_exists(b: &Backend) -> bool {
    block_on(async {
        let (client, conn) = tokio_postgres::connect(&b.url, tokio_postgres::NoTls)
            .await
            .expect("postgres");
        let task = tokio::spawn(conn);
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
                &[&format!("qupid_{}", b.namespace)],
            )
            .await
            .expect("query")
            .get(0);
        drop(client);
        let _ = task.await;
        n == 1
    })
}

/// A Redis namespace with no keys: no key is created.
#[test]
fn a_redis_namespace_with_no_keys_gets_none() {
    let b = Backend::redis();
    no_ledger_here(
        &["--ledger", &b.url, "--namespace", &b.namespace],
        &[&format!("{:?}", b.namespace), "holds no keys", &b.url],
    );
    assert!(redis_keys(&b).is_empty(), "no key was created");
}

fn redis_conn(b: &Backend) -> redis::Connection {
    redis::Client::open(b.url.as_str())
        .and_then(|c| c.get_connection())
        .expect("redis")
}

/// The namespace's keys and their types, sorted.
fn redis_keys(b: &Backend) -> Vec<(String, String)> {
    let mut c = redis_conn(b);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("qupid:{{{}}}:*", b.namespace))
        .query(&mut c)
        .expect("keys");
    let mut out: Vec<(String, String)> = keys
        .into_iter()
        .map(|k| {
            let t: String = redis::cmd("TYPE").arg(&k).query(&mut c).expect("type");
            (k, t)
        })
        .collect();
    out.sort();
    out
}
