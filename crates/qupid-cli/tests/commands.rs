//! Every command, human and `--json`, against every ledger: the real `qupid` binary run on a
//! SQLite file, a Redis namespace and a PostgreSQL namespace that the test filled through the
//! library.

mod support;

use predicates::prelude::*;
use predicates::str::{contains, is_match};
use serde_json::{json, Value};
use support::*;

/// Runs each scenario below once per ledger: `sqlite::NAME`, `redis::NAME`, `postgres::NAME`.
macro_rules! on_every_ledger {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(&super::Backend::sqlite()) })*
        }
        mod redis {
            $(#[test] fn $name() { super::$name(&super::Backend::redis()) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(&super::Backend::postgres()) })*
        }
    };
}

on_every_ledger!(
    stats_counts_every_state_and_finds_the_oldest_lease,
    stats_counts_expired_leases,
    list_shows_one_page_and_the_cursor_to_the_next,
    show_prints_the_whole_record,
    show_of_an_unknown_key_exits_1,
    remove_refuses_leased_keys_unless_forced,
    remove_force_repairs_an_unreadable_record,
    retry_revives_dead_keys_one_by_one_or_all,
    purge_dry_run_counts_and_changes_nothing,
    purge_removes_old_finished_records_of_the_chosen_states,
    dangerous_commands_ask_first,
    the_namespace_comes_from_qupid_namespace_and_one_rule_checks_it,
    long_keys_are_cut_in_tables_and_whole_elsewhere,
);

/// `QUPID_NAMESPACE` names the namespace as `--namespace` does (the examples read it too),
/// and a namespace that breaks the one rule is refused alike on every ledger, before anything
/// is opened.
fn the_namespace_comes_from_qupid_namespace_and_one_rule_checks_it(b: &Backend) {
    b.fill();
    let by_env = qupid()
        .args(["--ledger", &b.url, "--json", "stats"])
        .env("QUPID_NAMESPACE", &b.namespace)
        .assert()
        .success();
    let stats = json(&by_env.get_output().stdout);
    assert_eq!(stats["total"], json!(filled().total()), "{stats}");
    for bad in ["orders-eu", "Orders", "a b"] {
        qupid()
            .args(["--ledger", &b.url, "--namespace", bad, "stats"])
            .assert()
            .code(2)
            .stderr(contains(
                "expected a namespace of 1 to 48 characters of a-z, 0-9 and _",
            ));
    }
}

/// Stdout of a run that exited with `code`.
fn stdout_of(cmd: &mut assert_cmd::Command, code: i32) -> Vec<u8> {
    cmd.assert().code(code).get_output().stdout.clone()
}

fn keys_of(list: &Value) -> Vec<&str> {
    list["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["key"].as_str().expect("a key"))
        .collect()
}

fn stats_counts_every_state_and_finds_the_oldest_lease(b: &Backend) {
    // An empty namespace is pointed out: it is most often a typo. (One that never held a
    // ledger is "no qupid ledger here": see read_only.rs.)
    b.touch();
    let empty = b.qupid().arg("stats").assert().success();
    let empty = String::from_utf8_lossy(&empty.get_output().stdout).into_owned();
    assert!(
        empty.contains("none (nothing queued or running)"),
        "{empty}"
    );
    match b.kind {
        Kind::Sqlite => assert!(!empty.contains("namespace"), "{empty}"),
        _ => assert!(
            empty.contains(&format!(
                "namespace       {} (empty: is this the pipeline's namespace?)",
                b.namespace
            )),
            "{empty}"
        ),
    }
    b.fill();
    let v = json(&stdout_of(b.qupid().args(["--json", "stats"]), 0));
    assert_eq!(
        v["counts"],
        json!({"queued": 1, "running": 2, "completed": 6, "dead": 3})
    );
    assert_eq!(v["total"], 12);
    assert_eq!(v["expired_leases"], 0);
    assert_eq!(v["ledger"], b.url.as_str());
    match b.kind {
        Kind::Sqlite => assert!(v["namespace"].is_null(), "{v}"),
        _ => assert_eq!(v["namespace"], b.namespace.as_str()),
    }
    let now = v["now_ms"].as_u64().expect("now_ms");
    let oldest = v["oldest_lease_expires_at_ms"]
        .as_u64()
        .expect("oldest_lease_expires_at_ms");
    assert!(
        oldest > now && oldest <= now + LEASE.as_millis() as u64,
        "{v}"
    );

    b.qupid().arg("stats").assert().success().stdout(
        is_match(r"(?m)^queued +1$")
            .unwrap()
            .and(is_match(r"(?m)^running +2$").unwrap())
            .and(is_match(r"(?m)^completed +6$").unwrap())
            .and(is_match(r"(?m)^dead +3$").unwrap())
            .and(is_match(r"(?m)^total +12$").unwrap())
            .and(is_match(r"(?m)^oldest lease +expires in 59m$").unwrap())
            .and(is_match(r"(?m)^expired leases +none$").unwrap())
            .and(contains(
                "retention       set by each pipeline's Policy; purge by hand with `qupid purge`",
            ))
            .and(
                is_match(r"(?m)^clock +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(the ledger's\)$").unwrap(),
            ),
    );
}

/// A lease whose holder stopped renewing it shows among the queued records, and as expired.
fn stats_counts_expired_leases(b: &Backend) {
    b.fill();
    b.queue_expired(&["crashed/1", "crashed/2"]);
    let v = json(&stdout_of(b.qupid().args(["--json", "stats"]), 0));
    assert_eq!(
        v["counts"],
        json!({"queued": 3, "running": 2, "completed": 6, "dead": 3})
    );
    assert_eq!(v["total"], 14, "expired leases are not counted twice");
    assert_eq!(v["expired_leases"], 2);
    let now = v["now_ms"].as_u64().expect("now_ms");
    let oldest = v["oldest_lease_expires_at_ms"]
        .as_u64()
        .expect("oldest_lease_expires_at_ms");
    assert!(oldest < now, "the oldest lease is an expired one: {v}");

    b.qupid().arg("stats").assert().success().stdout(
        is_match(r"(?m)^queued +3$")
            .unwrap()
            .and(is_match(r"(?m)^total +14$").unwrap())
            .and(
                is_match(
                    r"(?m)^expired leases +2 of the queued and running \(their holders stopped renewing; the next offer of each takes it over\)$",
                )
                .unwrap(),
            )
            .and(is_match(r"(?m)^oldest lease +expired 1h ago \(").unwrap()),
    );
}

fn list_shows_one_page_and_the_cursor_to_the_next(b: &Backend) {
    b.fill();
    let all: Vec<&str> = [COMPLETED, OLD_COMPLETED].concat();
    let mut sorted = all.clone();
    sorted.sort_unstable();

    let first = json(&stdout_of(
        b.qupid()
            .args(["--json", "list", "--state", "completed", "--limit", "4"]),
        0,
    ));
    assert_eq!(first["state"], "completed");
    assert_eq!(keys_of(&first), sorted[..4]);
    assert_eq!(first["next"], sorted[3]);
    let record = &first["records"][0];
    assert_eq!(record["state"], "completed");
    assert_eq!(record["version"], "v1");
    assert!(record["finished_at_ms"].is_u64(), "{record}");
    assert!(record["expires_at_ms"].is_null(), "{record}");

    let cursor = first["next"].as_str().expect("a cursor");
    let second = json(&stdout_of(
        b.qupid().args([
            "list",
            "--state",
            "completed",
            "--limit",
            "4",
            "--after",
            cursor,
            "--json",
        ]),
        0,
    ));
    assert_eq!(keys_of(&second), sorted[4..]);
    assert!(second["next"].is_null(), "{second}");

    // Leased records have a lease expiry instead of a finish time.
    let queued = json(&stdout_of(
        b.qupid().args(["list", "--state", "queued", "--json"]),
        0,
    ));
    assert_eq!(keys_of(&queued), QUEUED);
    assert!(queued["records"][0]["expires_at_ms"].is_u64(), "{queued}");

    // Human: one line per record, the newline in a key escaped, the cursor at the end.
    let out = stdout_of(
        b.qupid()
            .args(["list", "--state", "completed", "--limit", "4"]),
        0,
    );
    let text = String::from_utf8(out).expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[0].starts_with("KEY") && lines[0].contains("FINISHED"),
        "{text}"
    );
    assert!(lines[4].starts_with("multi\\nline "), "{text}");
    assert!(
        lines[1].contains("now") || lines[1].contains("s ago"),
        "{text}"
    );
    // The cursor is quoted as bash's $'…' (a newline is in it): pasted into a shell, it is
    // the key again, and so is a key typed the way a table shows it.
    assert_eq!(lines[5], "next page: --after $'multi\\nline'");
    let hint = lines[5].strip_prefix("next page: ").expect("a hint");
    let pasted = bash(
        b,
        &format!("list --state completed --limit 4 --json {hint}"),
    );
    assert_eq!(keys_of(&json(&pasted)), sorted[4..]);
    let shown = bash(b, "--json show $'multi\\nline'");
    assert_eq!(json(&shown)["key"], "multi\nline");

    // Dead records show their last error, escaped and on one line.
    b.qupid()
        .args(["list", "--state", "dead"])
        .assert()
        .success()
        .stdout(
            contains("LAST ERROR")
                .and(contains("disk full\\nretry later"))
                .and(is_match(r"(?m)^old/dead/1 .* 10d ago +boom$").unwrap()),
        );

    // The last page says so.
    b.qupid()
        .args(["list", "--state", "queued", "--after", "queued/1"])
        .assert()
        .success()
        .stdout("no queued records after 'queued/1'\n");
}

/// Runs `qupid ARGS` through bash (so that its quoting applies), pointed at `b`, and answers
/// its stdout; it must succeed.
fn bash(b: &Backend, args: &str) -> Vec<u8> {
    let line = format!(
        "{} --ledger \"$QUPID_TEST_URL\" --namespace \"$QUPID_TEST_NS\" {args}",
        env!("CARGO_BIN_EXE_qupid")
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &line])
        .env("QUPID_TEST_URL", &b.url)
        .env("QUPID_TEST_NS", &b.namespace)
        .env_remove("QUPID_LEDGER")
        .env_remove("QUPID_NAMESPACE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash -c {line:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A key of 1,024 bytes is cut in tables (one long key would widen every row) and whole in
/// `--json`, in `show` and in the `next page` cursor.
fn long_keys_are_cut_in_tables_and_whole_elsewhere(b: &Backend) {
    let long = format!("long/{}", "x".repeat(1_019));
    assert_eq!(long.len(), 1_024);
    b.queue(&[&long, "short/1", "short/2"]);
    let text = String::from_utf8(stdout_of(
        b.qupid()
            .args(["list", "--state", "queued", "--limit", "2"]),
        0,
    ))
    .expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let widest = lines[..3]
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    assert!(
        widest < 120,
        "rows stay narrow ({widest} characters):\n{text}"
    );
    let cell = lines[1].split_whitespace().next().expect("a key cell");
    assert_eq!(cell.chars().count(), 64, "{cell}");
    assert!(
        cell.starts_with("long/xxx") && cell.ends_with('…'),
        "{cell}"
    );
    assert!(lines[2].starts_with("short/1 "), "{text}");
    assert_eq!(lines[3], "next page: --after 'short/1'");

    let v = json(&stdout_of(
        b.qupid().args(["--json", "list", "--state", "queued"]),
        0,
    ));
    assert_eq!(keys_of(&v)[0], long, "whole in --json");
    let shown = String::from_utf8(stdout_of(b.qupid().args(["show", &long]), 0)).expect("UTF-8");
    assert!(shown.contains(&long), "whole in show");
    // remove's table cuts it too.
    let removed = String::from_utf8(stdout_of(
        b.qupid().args(["remove", &long, "--force", "-y"]),
        0,
    ))
    .expect("UTF-8");
    assert!(
        removed.lines().all(|l| l.chars().count() < 120),
        "{removed}"
    );
}

fn show_prints_the_whole_record(b: &Backend) {
    b.fill();
    let dead = json(&stdout_of(b.qupid().args(["show", "dead/1", "--json"]), 0));
    assert_eq!(dead["key"], "dead/1");
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["version"], "v1");
    assert!(dead["newer_version"].is_null());
    assert_eq!(dead["attempts"], 1);
    assert_eq!(dead["abandoned"], 0);
    assert!(dead["token"].is_u64(), "{dead}");
    assert!(dead["expires_at_ms"].is_null(), "{dead}");
    assert!(dead["finished_at_ms"].is_u64(), "{dead}");
    assert_eq!(dead["last_error"], DEAD_ERROR);
    assert_eq!(dead["superseded"], false);
    let fields: Vec<&String> = dead.as_object().expect("an object").keys().collect();
    assert_eq!(fields.len(), 11, "{dead}");

    let running = json(&stdout_of(
        b.qupid().args(["--json", "show", "running/2"]),
        0,
    ));
    assert_eq!(running["state"], "running");
    assert_eq!(running["newer_version"], "v2");
    assert_eq!(running["attempts"], 1);
    assert!(running["expires_at_ms"].is_u64(), "{running}");
    assert!(running["finished_at_ms"].is_null(), "{running}");

    b.qupid()
        .args(["show", "dead/1"])
        .assert()
        .success()
        .stdout(
            is_match(r"(?m)^key +dead/1$")
                .unwrap()
                .and(is_match(r"(?m)^state +dead$").unwrap())
                .and(is_match(r"(?m)^attempts +1$").unwrap())
                .and(is_match(r"(?m)^lease expires +-$").unwrap())
                .and(is_match(r"(?m)^finished at +\d{4}-.*Z \((now|\d+s ago)\)$").unwrap())
                .and(is_match(r"(?m)^last error +disk full\\nretry later$").unwrap())
                .and(is_match(r"(?m)^superseded +no$").unwrap()),
        );
    b.qupid()
        .args(["show", "running/2"])
        .assert()
        .success()
        .stdout(
            is_match(r"(?m)^newer version +v2$")
                .unwrap()
                .and(is_match(r"(?m)^lease expires +.*Z \(in 59m\)$").unwrap()),
        );
    // A key with a newline stays on one line.
    b.qupid()
        .args(["show", "multi\nline"])
        .assert()
        .success()
        .stdout(is_match(r"(?m)^key +multi\\nline$").unwrap());
}

fn show_of_an_unknown_key_exits_1(b: &Backend) {
    b.fill();
    b.qupid()
        .args(["show", "no/such/key"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(
            contains("qupid: no record of key \"no/such/key\" in ").and(contains(b.url.as_str())),
        );
    b.qupid()
        .args(["--json", "show", "no/such/key"])
        .assert()
        .code(1)
        .stdout("");
}

fn remove_refuses_leased_keys_unless_forced(b: &Backend) {
    b.fill();
    b.qupid()
        .args(["remove", "running/1"])
        .assert()
        .code(1)
        .stdout(is_match(r"(?m)^running/1 +refused: running \(leased\)$").unwrap())
        .stderr(contains("refused to remove 1 leased key").and(contains("pass --force")));
    assert!(b.exists("running/1"));

    let v = json(&stdout_of(
        b.qupid()
            .args(["--json", "remove", "done/1", "no/such/key", "queued/1"]),
        1,
    ));
    assert_eq!(
        v,
        json!({
            "force": false,
            "removed": 1,
            "results": [
                {"key": "done/1", "outcome": "removed"},
                {"key": "no/such/key", "outcome": "not_found"},
                {"key": "queued/1", "outcome": "refused", "state": "queued"},
            ]
        })
    );
    assert!(!b.exists("done/1"));
    assert!(b.exists("queued/1"));

    // Forcing asks first: with nothing on stdin it refuses and changes nothing.
    b.qupid()
        .args(["remove", "--force", "running/1"])
        .assert()
        .code(1)
        .stderr(contains("proceed? [y/N]").and(contains("pass --yes")));
    assert!(b.exists("running/1"));

    b.qupid()
        .args([
            "remove",
            "--force",
            "--yes",
            "running/1",
            "queued/1",
            "old/done/1",
        ])
        .assert()
        .success()
        .stdout(
            is_match(r"(?m)^running/1 +removed$")
                .unwrap()
                .and(is_match(r"(?m)^queued/1 +removed$").unwrap())
                .and(is_match(r"(?m)^old/done/1 +removed$").unwrap()),
        )
        .stderr("");
    let s = b.stats();
    assert_eq!((s.queued, s.running, s.completed), (0, 1, 4));

    // A key given twice is removed once.
    let v = json(&stdout_of(
        b.qupid().args(["remove", "--json", "done/2", "done/2"]),
        0,
    ));
    assert_eq!(
        v["results"],
        json!([{"key": "done/2", "outcome": "removed"}])
    );

    // Unknown keys alone: exit 1, saying so.
    b.qupid()
        .args(["remove", "no/such/key"])
        .assert()
        .code(1)
        .stderr(contains("1 key had no record in"));
}

/// A key the ledger cannot read stops `show`, `retry` and `remove` without `--force`, naming
/// it; `remove --force` deletes whatever is there.
fn remove_force_repairs_an_unreadable_record(b: &Backend) {
    b.fill();
    b.plant("bad/1");
    for args in [
        &["show", "bad/1"][..],
        &["remove", "bad/1"],
        &["retry", "bad/1"],
    ] {
        b.qupid()
            .args(args)
            .assert()
            .code(2)
            .stderr(contains("bad/1").and(contains("force")));
    }
    let v = json(&stdout_of(
        b.qupid()
            .args(["--json", "remove", "--force", "--yes", "bad/1", "done/1"]),
        0,
    ));
    assert_eq!(
        v,
        json!({
            "force": true,
            "removed": 2,
            "results": [
                {"key": "bad/1", "outcome": "removed"},
                {"key": "done/1", "outcome": "removed"},
            ]
        })
    );
    b.qupid().args(["show", "bad/1"]).assert().code(1);
    let mut want = filled();
    want.completed -= 1;
    assert_eq!(b.stats(), want, "only the two keys are gone");
}

fn retry_revives_dead_keys_one_by_one_or_all(b: &Backend) {
    b.fill();
    b.qupid()
        .args(["retry", "dead/1"])
        .assert()
        .success()
        .stdout(is_match(r"(?m)^dead/1 +retried$").unwrap());
    assert!(!b.exists("dead/1"));

    let v = json(&stdout_of(
        b.qupid().args(["retry", "--json", "done/1", "dead/1"]),
        1,
    ));
    assert_eq!(
        v,
        json!({
            "all_dead": false,
            "retried": 0,
            "results": [
                {"key": "done/1", "outcome": "not_dead", "state": "completed"},
                {"key": "dead/1", "outcome": "not_found"},
            ]
        })
    );
    b.qupid()
        .args(["retry", "done/1"])
        .assert()
        .code(1)
        .stdout(is_match(r"(?m)^done/1 +refused: completed, not dead$").unwrap())
        .stderr(contains("1 key was not dead"));

    let v = json(&stdout_of(
        b.qupid().args(["retry", "--all-dead", "--yes", "--json"]),
        0,
    ));
    assert_eq!(v["all_dead"], true);
    assert_eq!(v["retried"], 2);
    let keys: Vec<&str> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            assert_eq!(r["outcome"], "retried", "{r}");
            r["key"].as_str().expect("a key")
        })
        .collect();
    assert_eq!(keys, ["dead/2", "old/dead/1"]);
    assert_eq!(b.stats().dead, 0);

    // Nothing dead: nothing to confirm (no question on stderr, though stdin has no answer),
    // and not a refusal.
    let ledger = match b.kind {
        Kind::Sqlite => b.url.clone(),
        _ => format!("{} (namespace {:?})", b.url, b.namespace),
    };
    b.qupid()
        .args(["retry", "--all-dead"])
        .assert()
        .success()
        .stdout(format!("nothing to retry: {ledger} has no dead records\n"))
        .stderr("");
    let v = json(&stdout_of(
        b.qupid().args(["retry", "--all-dead", "--json"]),
        0,
    ));
    assert_eq!(v, json!({"all_dead": true, "retried": 0, "results": []}));
}

fn purge_dry_run_counts_and_changes_nothing(b: &Backend) {
    b.fill();
    let v = json(&stdout_of(
        b.qupid().args([
            "--json",
            "purge",
            "--completed",
            "--older-than",
            "7d",
            "--dry-run",
        ]),
        0,
    ));
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["older_than_secs"], 604_800);
    assert!(v["now_ms"].is_u64(), "{v}");
    assert_eq!(v["completed"], 2);
    assert!(v["dead"].is_null(), "{v}");

    b.qupid()
        .args(["purge", "--completed", "--dead", "--older-than", "1w", "--dry-run"])
        .assert()
        .success()
        .stdout(
            is_match(
                r"^dry run: would purge 2 completed records and 1 dead record that finished 7d or more ago \(at or before \d{4}-.*Z\); nothing was changed\n$",
            )
            .unwrap(),
        );
    // An age of zero counts every record of the state; and still nothing was changed.
    let v = json(&stdout_of(
        b.qupid().args([
            "purge",
            "--dead",
            "--older-than",
            "0s",
            "--dry-run",
            "--json",
        ]),
        0,
    ));
    assert_eq!(v["dead"], 3);
    assert_eq!(b.stats(), filled());
}

fn purge_removes_old_finished_records_of_the_chosen_states(b: &Backend) {
    b.fill();
    let v = json(&stdout_of(
        b.qupid()
            .args(["--json", "purge", "--dead", "--older-than", "7d", "--yes"]),
        0,
    ));
    assert_eq!(v["dry_run"], false);
    assert!(v["completed"].is_null(), "{v}");
    assert_eq!(v["dead"], 1);
    assert!(!b.exists("old/dead/1"));
    assert!(b.exists("old/done/1"), "completed records were not chosen");

    b.qupid()
        .args([
            "purge",
            "--completed",
            "--dead",
            "--older-than",
            "7d",
            "--yes",
        ])
        .assert()
        .success()
        .stdout("purged 2 completed records and 0 dead records that finished 7d or more ago\n");
    let s = b.stats();
    assert_eq!(
        (s.queued, s.running, s.completed, s.dead),
        (1, 2, 4, 2),
        "only the old finished records are gone"
    );
}

fn dangerous_commands_ask_first(b: &Backend) {
    b.fill();
    let purge = ["purge", "--completed", "--older-than", "7d"];
    // No answer: refused, with the way out.
    b.qupid().args(purge).assert().code(1).stdout("").stderr(
        contains("about to delete completed records that finished 7d or more ago from")
            .and(contains("proceed? [y/N]"))
            .and(contains("qupid: no answer on stdin"))
            .and(contains("pass --yes")),
    );
    // Declined.
    b.qupid()
        .args(purge)
        .write_stdin("n\n")
        .assert()
        .code(1)
        .stderr(contains("qupid: declined: nothing was changed"));
    assert_eq!(b.stats(), filled());
    // Accepted.
    b.qupid()
        .args(purge)
        .write_stdin("y\n")
        .assert()
        .success()
        .stdout("purged 2 completed records that finished 7d or more ago\n");
    assert_eq!(b.stats().completed, 4);

    b.qupid()
        .args(["retry", "--all-dead"])
        .write_stdin("yes\n")
        .assert()
        .success()
        .stderr(contains("about to retry every dead record in").and(contains("(3 now)")))
        .stdout("retried 3 dead records: they are processed again at their next offer\n");
    assert_eq!(b.stats().dead, 0);
}
