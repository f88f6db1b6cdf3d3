//! What the tool does with bad input and missing servers (exit 2, one line naming the URL,
//! passwords hidden), how it takes its settings, and `stats --watch` until Ctrl-C.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use predicates::str::{contains, is_match};
use support::*;

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Asserts that a run failed with exit 2 and one line on stderr containing each of `parts`.
fn fails_with(cmd: &mut assert_cmd::Command, parts: &[&str]) {
    let out = cmd.assert().code(2).stdout("").get_output().clone();
    let err = String::from_utf8(out.stderr).expect("UTF-8");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("qupid: "), "{err}");
    for p in parts {
        assert!(err.contains(p), "expected {p:?} in {err:?}");
    }
}

#[test]
fn a_ledger_url_is_required() {
    qupid()
        .arg("stats")
        .assert()
        .code(2)
        .stderr(contains("the ledger's URL is required").and(contains("QUPID_LEDGER")));
}

#[test]
fn the_ledger_and_namespace_come_from_the_environment_too() {
    let b = Backend::sqlite();
    b.fill();
    qupid()
        .env("QUPID_LEDGER", &b.url)
        .env("QUPID_NAMESPACE", "ignored_by_sqlite")
        .args(["stats", "--json"])
        .assert()
        .success()
        .stdout(contains("\"total\":12"));
    // The options may come after the command as well.
    qupid()
        .args(["stats", "--json", "--ledger", &b.url])
        .assert()
        .success()
        .stdout(contains("\"namespace\":null"));
}

#[test]
fn unknown_schemes_are_usage_errors_naming_the_url() {
    fails_with(
        qupid().args(["--ledger", "mysql://localhost/db", "stats"]),
        &["mysql://localhost/db", "expected a ledger URL"],
    );
    fails_with(
        qupid().args(["--ledger", "", "stats"]),
        &["expected a ledger URL"],
    );
}

#[test]
fn a_missing_sqlite_file_is_not_created() {
    let dir = tempfile::tempdir().expect("a folder");
    let path = dir.path().join("typo.db");
    let url = format!("sqlite://{}", path.display());
    fails_with(
        qupid().args(["--ledger", &url, "stats"]),
        &["no qupid ledger here", &path.display().to_string()],
    );
    fails_with(
        qupid().args(["--ledger", &url, "remove", "k"]),
        &[&url, "never creates a ledger"],
    );
    assert!(!path.exists());
}

#[test]
fn a_file_that_is_not_a_ledger_is_an_error() {
    let dir = tempfile::tempdir().expect("a folder");
    let path = dir.path().join("notes.db");
    std::fs::write(
        &path,
        "not a database, just text that is long enough to matter\n",
    )
    .expect("write");
    let url = format!("sqlite://{}", path.display());
    fails_with(qupid().args(["--ledger", &url, "stats"]), &[&url]);
}

#[test]
fn an_unreachable_redis_is_exit_2_with_the_password_hidden() {
    let port = closed_port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}/");
    let shown = format!("redis://:***@127.0.0.1:{port}/");
    fails_with(qupid().args(["--ledger", &url, "stats"]), &[&shown]);
    qupid()
        .args(["--ledger", &url, "list", "--state", "dead"])
        .assert()
        .code(2)
        .stderr(contains("hunter2").not());
}

#[test]
fn an_unreachable_postgres_is_exit_2_with_the_password_hidden() {
    let port = closed_port();
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/test");
    let shown = format!("postgres://postgres:***@127.0.0.1:{port}/test");
    fails_with(qupid().args(["--ledger", &url, "show", "k"]), &[&shown]);
    qupid()
        .args(["--ledger", &url, "stats"])
        .assert()
        .code(2)
        .stderr(contains("hunter2").not());
}

/// A parameter the driver does not know is named, so the user can tell which one to fix
/// (the pool size is a setting of the library's builder, not of the URL).
#[test]
fn an_unknown_postgres_url_parameter_is_named() {
    let port = closed_port();
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/test?pool_size=3");
    fails_with(
        qupid().args(["--ledger", &url, "stats"]),
        &["unknown option `pool_size`", "postgres://postgres:***@"],
    );
}

#[test]
fn bad_namespaces_are_refused_before_connecting() {
    let port = closed_port();
    fails_with(
        qupid().args([
            "--ledger",
            &format!("postgres://postgres@127.0.0.1:{port}/test"),
            "--namespace",
            "Not-Valid",
            "stats",
        ]),
        &["namespace"],
    );
    fails_with(
        qupid().args([
            "--ledger",
            &format!("redis://127.0.0.1:{port}/"),
            "--namespace",
            "a{b}",
            "stats",
        ]),
        &["namespace"],
    );
}

#[test]
fn bad_durations_states_and_limits_are_usage_errors() {
    let b = Backend::sqlite();
    for bad in ["7x", "", "1.5h", "-7d", "7"] {
        b.qupid()
            .args([
                "purge",
                "--dead",
                &format!("--older-than={bad}"),
                "--dry-run",
            ])
            .assert()
            .code(2)
            .stderr(contains("expected a duration like 90s, 15m, 12h, 7d or 2w"));
    }
    b.qupid()
        .args(["list", "--state", "finished"])
        .assert()
        .code(2)
        .stderr(
            contains("invalid value 'finished'").and(contains("queued, running, completed, dead")),
        );
    b.qupid()
        .args(["list", "--state", "dead", "--limit", "0"])
        .assert()
        .code(2);
    b.qupid().args(["stats", "--watch", "0"]).assert().code(2);
}

#[test]
fn commands_need_their_arguments() {
    let b = Backend::sqlite();
    // purge: a state and an age.
    b.qupid()
        .args(["purge", "--older-than", "7d"])
        .assert()
        .code(2)
        .stderr(contains("--completed").and(contains("--dead")));
    b.qupid().args(["purge", "--dead"]).assert().code(2);
    // retry: keys or --all-dead, not both.
    b.qupid().arg("retry").assert().code(2);
    b.qupid()
        .args(["retry", "k", "--all-dead"])
        .assert()
        .code(2)
        .stderr(contains("cannot be used with"));
    b.qupid().arg("remove").assert().code(2);
    b.qupid().arg("show").assert().code(2);
    b.qupid().arg("list").assert().code(2);
    // An empty key can never be in a ledger.
    fails_with(b.qupid().args(["show", ""]), &["must not be empty"]);
}

/// Usage errors are one line, as every error is: `qupid: `, clap's message with its context
/// (the values a setting takes), and the `--help` to read; exit 2, nothing on stdout.
#[test]
fn usage_errors_are_one_line() {
    let b = Backend::sqlite();
    fails_with(
        b.qupid().args(["list", "--state", "finished"]),
        &[
            "invalid value 'finished'",
            "queued, running, completed, dead",
            "(see `qupid list --help`)",
        ],
    );
    fails_with(
        b.qupid().args(["stats", "--bogus"]),
        &[
            "unexpected argument '--bogus'",
            "(see `qupid stats --help`)",
        ],
    );
    fails_with(
        b.qupid().args(["purge", "--dead"]),
        &[
            "not provided: --older-than <AGE>",
            "(see `qupid purge --help`)",
        ],
    );
    fails_with(
        b.qupid().args(["retry", "k", "--all-dead"]),
        &["cannot be used with", "(see `qupid retry --help`)"],
    );
    fails_with(
        &mut qupid(),
        &["expected a command", "(see `qupid --help`)"],
    );
    fails_with(
        qupid().arg("stats"),
        &["the ledger's URL is required", "QUPID_LEDGER"],
    );
}

#[test]
fn help_documents_urls_exit_codes_and_json() {
    qupid().arg("--help").assert().success().stdout(
        contains("Exit codes:")
            .and(contains("sqlite://PATH"))
            .and(contains("--json"))
            .and(contains("stats"))
            .and(contains("purge")),
    );
    qupid()
        .args(["purge", "--help"])
        .assert()
        .success()
        .stdout(contains("--older-than <AGE>").and(contains("--dry-run")));
    qupid()
        .arg("--version")
        .assert()
        .success()
        .stdout(is_match(r"^qupid \d+\.\d+\.\d+\n$").unwrap());
}

#[test]
fn a_memory_ledger_is_empty() {
    qupid()
        .args(["--ledger", "memory:", "stats"])
        .assert()
        .success()
        .stdout(
            is_match(r"(?m)^total +0$")
                .unwrap()
                .and(contains("none (nothing queued or running)")),
        );
}

/// Starts `qupid … stats --watch 1` with its stdout piped, and sends each line it prints.
fn watch(b: &Backend, json: bool) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut cmd = StdCommand::new(env!("CARGO_BIN_EXE_qupid"));
    cmd.args(["--ledger", &b.url, "stats", "--watch", "1"])
        .env_remove("QUPID_LEDGER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if json {
        cmd.arg("--json");
    }
    let mut child = cmd.spawn().expect("run qupid");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Sends Ctrl-C (SIGINT) and waits for the exit status, at most 10 seconds.
fn interrupt(child: &mut std::process::Child) -> std::process::ExitStatus {
    let status = StdCommand::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("qupid stats --watch did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watch_prints_one_json_object_per_refresh_until_ctrl_c() {
    let b = Backend::sqlite();
    b.fill();
    let (mut child, lines) = watch(&b, true);
    let mut nows = Vec::new();
    for _ in 0..2 {
        let line = lines
            .recv_timeout(Duration::from_secs(15))
            .expect("a refresh within 15s");
        let v = json(line.as_bytes());
        assert_eq!(v["total"], 12, "{v}");
        nows.push(v["now_ms"].as_u64().expect("now_ms"));
    }
    assert!(
        nows[1] >= nows[0] + 900,
        "refreshed about a second apart: {nows:?}"
    );
    let status = interrupt(&mut child);
    assert!(
        status.success(),
        "Ctrl-C ends a watch with exit 0: {status:?}"
    );
}

#[test]
fn watch_clears_the_screen_between_refreshes() {
    let b = Backend::sqlite();
    b.fill();
    let (mut child, lines) = watch(&b, false);
    let mut clears = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while clears < 2 {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("two refreshes within 15s");
        if line.starts_with("\x1b[2J\x1b[H") {
            assert!(line.contains("ledger"), "{line:?}");
            clears += 1;
        }
    }
    let status = interrupt(&mut child);
    assert!(status.success(), "{status:?}");
}
