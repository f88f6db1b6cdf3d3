//! The SQLite ledger and its file: restarts, schema versions, bad input, sharing one file
//! between ledgers. (Tests across OS processes are in `processes/`.)
#![cfg(feature = "sqlite")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use qupid::clock::ManualClock;
use qupid::ledger::sqlite::Synchronous;
use qupid::ledger::{Claim, Failed, Failure, Offered, Refused, Removed, SqliteLedger, State};
use qupid::{ErrorKind, Key, Ledger, LedgerAdmin, Offer, Policy, Version};
use tempfile::TempDir;

fn key(s: &str) -> Key {
    Key::new(s).expect("valid key")
}

fn policy() -> Policy {
    let mut p = Policy::default();
    p.lease = Duration::from_secs(10);
    p
}

fn temp() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("ledger.db");
    (dir, path)
}

async fn open(path: &Path, clock: &ManualClock) -> SqliteLedger {
    SqliteLedger::builder(path)
        .clock(clock.clone())
        .open()
        .await
        .expect("the ledger opens")
}

async fn offer1(l: &SqliteLedger, p: &Policy, k: &str, v: Option<&str>) -> Offered {
    let o = Offer {
        key: key(k),
        version: v.map(|v| Version::new(v).expect("valid version")),
    };
    l.offer(p, &[o]).await.expect("offer").remove(0)
}

async fn accept(l: &SqliteLedger, p: &Policy, k: &str, v: Option<&str>) -> Claim {
    match offer1(l, p, k, v).await {
        Offered::Accepted(lease) => Claim {
            key: key(k),
            token: lease.token,
        },
        other => panic!("{k} should be accepted, was {other:?}"),
    }
}

async fn start1(l: &SqliteLedger, p: &Policy, c: &Claim) -> u32 {
    let started = l.start(p, std::slice::from_ref(c)).await.expect("start");
    started[0].as_ref().expect("started").attempt
}

fn says(err: &qupid::Error, path: &Path, words: &[&str]) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "the error names the file: {msg}"
    );
    for w in words {
        assert!(msg.contains(w), "the error says {w:?}: {msg}");
    }
}

#[tokio::test]
async fn completed_keys_stay_completed_across_restarts() {
    let (_dir, path) = temp();
    let clock = ManualClock::new();
    let p = policy();
    let keys: Vec<String> = (0..50).map(|i| format!("orders/{i}")).collect();
    {
        let l = open(&path, &clock).await;
        for k in &keys {
            let c = accept(&l, &p, k, Some("v1")).await;
            start1(&l, &p, &c).await;
            l.complete(&[c]).await.expect("complete")[0]
                .as_ref()
                .expect("completed");
        }
    }
    clock.advance(Duration::from_secs(3600));
    let l = open(&path, &clock).await;
    for k in &keys {
        assert_eq!(
            offer1(&l, &p, k, Some("v1")).await,
            Offered::Duplicate(State::Completed),
            "{k} is still a duplicate after the restart"
        );
        let r = l.get(&key(k)).await.expect("get").expect("a record");
        assert_eq!(r.state, State::Completed);
        assert_eq!(r.version.as_ref().map(Version::as_str), Some("v1"));
        assert_eq!(r.attempts, 1);
    }
    assert_eq!(l.stats().await.expect("stats").completed, 50);
    assert!(
        matches!(
            offer1(&l, &p, &keys[0], Some("v2")).await,
            Offered::Accepted(_)
        ),
        "changed content is still processed again"
    );
}

#[tokio::test]
async fn leases_attempts_and_tokens_survive_restarts() {
    let (_dir, path) = temp();
    let clock = ManualClock::new();
    let p = policy();
    let (poison, queued) = {
        let l = open(&path, &clock).await;
        let poison = accept(&l, &p, "poison", None).await;
        assert_eq!(start1(&l, &p, &poison).await, 1);
        let failure = Failure {
            claim: poison.clone(),
            error: "boom".into(),
        };
        let failed = l.fail(&p, &[failure]).await.expect("fail").remove(0);
        assert_eq!(failed, Ok(Failed::Retry { attempts: 1 }));
        assert_eq!(start1(&l, &p, &poison).await, 2);
        let queued = accept(&l, &p, "queued", None).await;
        (poison, queued)
        // The process "crashes" here: the ledger is dropped with both keys leased.
    };
    let mut last_token = poison.token.max(queued.token);
    let l = open(&path, &clock).await;
    assert_eq!(
        offer1(&l, &p, "queued", None).await,
        Offered::Duplicate(State::Queued),
        "a lease still valid after the restart still blocks"
    );
    clock.advance(Duration::from_secs(11));
    for k in ["queued", "poison"] {
        let Offered::Accepted(lease) = offer1(&l, &p, k, None).await else {
            panic!("{k}: an expired lease lets the next offer through after a restart")
        };
        assert!(lease.token > last_token, "tokens keep growing");
        last_token = lease.token;
        let want_attempts = if k == "poison" { 2 } else { 0 };
        assert_eq!(lease.attempts, want_attempts, "{k}: attempts are kept");
    }
    let r = l.get(&key("poison")).await.expect("get").expect("record");
    assert_eq!((r.attempts, r.abandoned), (2, 1));
    assert_eq!(r.last_error.as_deref(), Some("boom"));
    let fenced = l.complete(&[poison]).await.expect("complete").remove(0);
    assert!(
        fenced.is_err(),
        "the crashed holder's token is fenced out after the restart"
    );
    // A few more restarts: tokens never go back.
    drop(l);
    for i in 0..3 {
        let l = open(&path, &clock).await;
        let c = accept(&l, &p, &format!("later-{i}"), None).await;
        assert!(c.token > last_token, "restart {i}: tokens keep growing");
        last_token = c.token;
    }
}

#[tokio::test]
async fn leases_expire_by_wall_clock_across_restarts() {
    let (_dir, path) = temp();
    let mut p = policy();
    p.lease = Duration::from_millis(1500);
    {
        let l = SqliteLedger::open(&path).await.expect("open");
        accept(&l, &p, "k", None).await;
    }
    // The default clock starts from the wall clock, so a new process sees the old lease.
    let l = SqliteLedger::open(&path).await.expect("reopen");
    assert_eq!(
        offer1(&l, &p, "k", None).await,
        Offered::Duplicate(State::Queued)
    );
    drop(l);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let l = SqliteLedger::open(&path).await.expect("reopen");
    assert!(matches!(
        offer1(&l, &p, "k", None).await,
        Offered::Accepted(_)
    ));
}

#[tokio::test]
async fn urls_open_the_same_file() {
    let (_dir, path) = temp();
    let url = format!(
        "sqlite://{}?synchronous=full&commit_window_ms=1",
        path.display()
    );
    let l = SqliteLedger::open_url(&url).await.expect("open by URL");
    assert_eq!(l.synchronous(), Synchronous::Full);
    assert_eq!(l.path(), path);
    accept(&l, &policy(), "k", None).await;
    drop(l);
    let l = SqliteLedger::open_url(&format!("sqlite:{}", path.display()))
        .await
        .expect("reopen");
    assert_eq!(l.stats().await.expect("stats").queued, 1);
    let err = SqliteLedger::open_url("sqlite://x.db?journal=off")
        .await
        .expect_err("an unknown parameter");
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_untouched() {
    let (_dir, path) = temp();
    drop(SqliteLedger::open(&path).await.expect("create"));
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    raw.execute(
        "UPDATE qupid_meta SET value = 99 WHERE name = 'schema_version'",
        [],
    )
    .expect("fake a newer schema");
    drop(raw);
    let err = SqliteLedger::open(&path).await.expect_err("a newer schema");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    says(
        &err,
        &path,
        &["written by a newer qupid: schema version 99, this build reads up to 1"],
    );
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    let v: i64 = raw
        .query_row(
            "SELECT value FROM qupid_meta WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .expect("version");
    assert_eq!(v, 99, "the newer file is left as it was");
}

#[tokio::test]
async fn a_directory_is_refused() {
    let (dir, _) = temp();
    let err = SqliteLedger::open(dir.path())
        .await
        .expect_err("a directory");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    says(&err, dir.path(), &["directory"]);
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_corrupt_and_untouched() {
    let (_dir, path) = temp();
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 13) as u8).collect();
    std::fs::write(&path, &garbage).expect("write garbage");
    let err = SqliteLedger::open(&path).await.expect_err("garbage");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    says(&err, &path, &["not a SQLite database"]);
    assert!(
        std::error::Error::source(&err).is_some(),
        "the driver's error is kept"
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        garbage,
        "the file is not modified"
    );
}

#[tokio::test]
async fn a_missing_directory_is_refused() {
    let (dir, _) = temp();
    let path = dir.path().join("no/such/dir/ledger.db");
    let err = SqliteLedger::open(&path).await.expect_err("missing dir");
    assert_eq!(err.kind(), ErrorKind::Ledger, "{err}");
    assert!(!err.is_transient());
    says(&err, &path, &["cannot write"]);
}

#[tokio::test]
async fn a_locked_file_is_unavailable_until_the_lock_goes() {
    let (_dir, path) = temp();
    let clock = ManualClock::new();
    let p = policy();
    let l = SqliteLedger::builder(&path)
        .clock(clock.clone())
        .busy_timeout(Duration::from_millis(100))
        .open()
        .await
        .expect("open");
    accept(&l, &p, "before", None).await;
    // Another process takes the write lock and keeps it.
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    raw.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let err = l
        .offer(&p, &[Offer::new(key("during"))])
        .await
        .expect_err("the write lock is held elsewhere");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_transient());
    says(&err, &path, &["locked by another connection", "100ms"]);
    let err = SqliteLedger::builder(&path)
        .busy_timeout(Duration::from_millis(100))
        .open()
        .await
        .expect_err("opening needs the write lock too");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // Reads go on: WAL readers do not wait for writers.
    assert_eq!(
        l.get(&key("before")).await.expect("get").map(|r| r.state),
        Some(State::Queued)
    );
    raw.execute_batch("ROLLBACK").expect("unlock");
    assert!(matches!(
        offer1(&l, &p, "during", None).await,
        Offered::Accepted(_)
    ));
}

/// Offers `keys` from `ledgers` at once, each in its own order and batch size, and answers how
/// many times each key was accepted.
async fn offer_everywhere(ledgers: &[SqliteLedger], keys: usize) -> Vec<u32> {
    let mut tasks = Vec::new();
    for (t, l) in ledgers.iter().enumerate() {
        for half in 0..2 {
            let l = l.clone();
            let role = t * 2 + half;
            tasks.push(tokio::spawn(async move {
                offer_in_order(&l, keys, role, 16 + role * 29).await
            }));
        }
    }
    let mut count = vec![0u32; keys];
    for t in tasks {
        for i in t.await.expect("task") {
            count[i] += 1;
        }
    }
    count
}

/// Offers keys `0..keys` in an order picked by `role`, `batch` at a time; answers those
/// accepted.
async fn offer_in_order(l: &SqliteLedger, keys: usize, role: usize, batch: usize) -> Vec<usize> {
    let p = policy();
    let mut order: Vec<usize> = (0..keys).collect();
    order.rotate_left(role * keys / 4 % keys);
    if role % 2 == 1 {
        order.reverse();
    }
    let mut won = Vec::new();
    for chunk in order.chunks(batch) {
        let batch: Vec<Offer> = chunk
            .iter()
            .map(|i| Offer::new(key(&format!("key-{i}"))))
            .collect();
        let out = l.offer(&p, &batch).await.expect("offer");
        for (o, i) in out.iter().zip(chunk) {
            if let Offered::Accepted(_) = o {
                won.push(*i);
            }
        }
    }
    won
}

fn exactly_once(count: &[u32]) {
    let wrong: Vec<_> = count
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 1)
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "keys accepted other than once: {wrong:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ledgers_on_one_file_accept_each_key_once() {
    let (_dir, path) = temp();
    let a = SqliteLedger::open(&path).await.expect("open a");
    let b = SqliteLedger::open(&path).await.expect("open b");
    let count = offer_everywhere(&[a.clone(), b.clone()], 2000).await;
    exactly_once(&count);
    assert_eq!(a.stats().await.expect("stats").queued, 2000);
    assert_eq!(b.stats().await.expect("stats").queued, 2000);
}

/// One corrupt page among the records: the file opens and counts (its indexes are whole),
/// but offers that reach the page fail with `Corrupt`. A pipeline stops within moments with
/// that error, which names the file, instead of retrying every poll and returning `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_page_ends_a_pipeline_with_an_error_naming_the_file() {
    use qupid::{Entry, Pipeline, Source};
    let (_dir, path) = temp();
    let keys: Vec<Offer> = (0..3000)
        .map(|i| Offer::new(key(&format!("k/{i:04}"))))
        .collect();
    {
        let l = SqliteLedger::open(&path).await.expect("open");
        let p = policy();
        let out = l.offer_and_start(&p, &keys).await.expect("offer");
        let claims: Vec<Claim> = out
            .iter()
            .zip(&keys)
            .map(|(o, k)| Claim {
                key: k.key.clone(),
                token: o.lease().expect("accepted").token,
            })
            .collect();
        let done = l.complete(&claims).await.expect("complete");
        assert!(done.iter().all(Result::is_ok));
    }
    // Fold the WAL into the file, then overwrite one leaf page of the records' table.
    let page: i64 = {
        let db = rusqlite::Connection::open(&path).expect("open raw");
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        db.query_row(
            "SELECT pageno FROM dbstat WHERE name = 'qupid_entries' AND pagetype = 'leaf' \
             ORDER BY pageno LIMIT 1 OFFSET 5",
            [],
            |r| r.get(0),
        )
        .expect("a leaf page of records")
    };
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open the file");
        let at = u64::try_from(page - 1).expect("page numbers start at 1") * 4096;
        f.seek(SeekFrom::Start(at)).expect("seek");
        f.write_all(&[0xFF; 4096]).expect("corrupt the page");
    }
    let l = SqliteLedger::open(&path)
        .await
        .expect("the file opens: its schema is whole");
    assert_eq!(l.stats().await.expect("counts").completed, 3000);

    let source = Source::poll(Duration::from_millis(10), move || {
        let keys: Vec<String> = (0..3000).map(|i| format!("k/{i:04}")).collect();
        async move { Ok::<_, std::io::Error>(keys.into_iter().map(|k| Entry::new(k, ()))) }
    });
    let run = Pipeline::builder(l)
        .source(source)
        .process(|_| async { Ok::<_, std::io::Error>(()) })
        .save(|_, ()| async { Ok::<_, std::io::Error>(()) })
        .stop_when_idle()
        .build()
        .expect("a pipeline")
        .run();
    let err = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run ends within moments")
        .expect_err("on the corrupt file's error");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    says(&err, &path, &["corrupt"]);
}

/// Rows damaged by hand in other ways than the conformance tests' (a state code out of range):
/// each is unreadable for its key alone, says what it holds, and is left as it was until a
/// forced remove.
#[tokio::test]
async fn rows_damaged_by_hand_are_unreadable_for_their_key_alone() {
    let (_dir, path) = temp();
    let clock = ManualClock::new();
    let l = open(&path, &clock).await;
    let p = policy();
    let damage = [
        (
            "token",
            "UPDATE qupid_entries SET token = -3 WHERE key = ?1",
            "a token of -3",
        ),
        (
            "version",
            "UPDATE qupid_entries SET version = x'ff00' WHERE key = ?1",
            "a version that is not valid UTF-8",
        ),
        (
            "attempts",
            "UPDATE qupid_entries SET attempts = 'many' WHERE key = ?1",
            "an attempt count stored as text",
        ),
        (
            "time",
            "UPDATE qupid_entries SET at = 1.5 WHERE key = ?1",
            "a time stored as a real number",
        ),
    ];
    let mut claims = Vec::new();
    for (k, _, _) in damage {
        let c = accept(&l, &p, k, Some("v1")).await;
        start1(&l, &p, &c).await;
        claims.push(c);
    }
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    let row = |k: &str| -> String {
        raw.query_row(
            "SELECT concat_ws(' ', quote(state), quote(token), quote(attempts), quote(at),
               quote(version)) FROM qupid_entries WHERE key = ?1",
            [k.as_bytes()],
            |r| r.get(0),
        )
        .expect("a row")
    };
    for (k, sql, _) in damage {
        raw.execute(sql, [k.as_bytes()]).expect("damage a row");
    }
    let before: Vec<String> = damage.iter().map(|(k, _, _)| row(k)).collect();

    let mut offers: Vec<Offer> = damage.iter().map(|(k, _, _)| Offer::new(key(k))).collect();
    offers.push(Offer::new(key("good")));
    let out = l.offer(&p, &offers).await.expect("offer");
    for ((k, _, found), o) in damage.iter().zip(&out) {
        match o {
            Offered::Unreadable(u) => assert_eq!(u.found(), *found, "{k}"),
            other => panic!("{k}: expected unreadable, found {other:?}"),
        }
    }
    assert!(matches!(out[4], Offered::Accepted(_)), "{out:?}");
    let failures: Vec<Failure> = claims
        .iter()
        .map(|c| Failure {
            claim: c.clone(),
            error: "boom".to_owned(),
        })
        .collect();
    let failed = l.fail(&p, &failures).await.expect("fail");
    assert!(
        failed
            .iter()
            .all(|f| matches!(f, Err(Refused::Unreadable(_)))),
        "{failed:?}"
    );
    // start after a failed attempt reads the row whole; release and renew are guarded writes
    // that match only a row whose state and token are intact.
    let started = l.start(&p, &claims).await.expect("start");
    assert!(
        started
            .iter()
            .all(|s| matches!(s, Err(Refused::Unreadable(_)))),
        "{started:?}"
    );
    let after: Vec<String> = damage.iter().map(|(k, _, _)| row(k)).collect();
    assert_eq!(after, before, "the damaged rows are untouched");

    for (k, _, found) in damage {
        let err = l.get(&key(k)).await.expect_err("get");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains(found), "{err}");
        let err = l.remove(&[key(k)], false).await.expect_err("remove");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    }
    let keys: Vec<Key> = damage.iter().map(|(k, _, _)| key(k)).collect();
    assert_eq!(
        l.remove(&keys, true).await.expect("forced remove"),
        vec![Removed::Removed; 4]
    );
    assert_eq!(l.stats().await.expect("stats").total(), 1);
}

/// `open`'s cancel safety: "dropping the future stops the threads once they have opened the
/// file; a schema migration already started is either committed whole or not at all". Opens
/// of a new file are dropped after growing delays; the open that finishes finds a whole
/// ledger, and so does every open after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_open_leaves_a_file_that_opens() {
    let (_dir, path) = temp();
    let mut dropped = 0;
    for micros in [0u64, 100, 500, 1_000, 2_000, 5_000, 10_000, 50_000] {
        let wait = Duration::from_micros(micros);
        match tokio::time::timeout(wait, SqliteLedger::open(&path)).await {
            Err(_) => dropped += 1,
            Ok(r) => {
                r.expect("an open that finishes succeeds");
                break;
            }
        }
    }
    assert!(dropped > 0, "at least one open was dropped mid-way");
    // The dropped opens' threads let go of the file soon after.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let l = SqliteLedger::open(&path).await.expect("the file opens");
    let p = policy();
    assert!(matches!(
        offer1(&l, &p, "k", None).await,
        Offered::Accepted(_)
    ));
    drop(l);
    let again = SqliteLedger::open(&path).await.expect("and again");
    assert_eq!(again.stats().await.expect("stats").queued, 1);
}
