//! The `poll_process_save` example as a user runs it: `--help` is usage on stdout with exit 0,
//! a bad argument is one line on stderr with exit 2, an unusable `--out` is one error naming
//! it, and `| head -1` (stdout closed early) ends the run normally, not in a panic.
//!
//! Runs the example binary that `cargo test` builds next to this test's
//! (`target/<profile>/examples/poll_process_save`); build it first when running this test
//! alone (`cargo build -p qupid --example poll_process_save`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The example binary `cargo test` builds next to this test's.
fn example() -> Command {
    let exe = std::env::current_exe().expect("this test's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary is in target/<profile>/deps");
    let bin: PathBuf = profile
        .join("examples")
        .join(format!("poll_process_save{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} does not exist: build it with `cargo build -p qupid --example poll_process_save` \
         (cargo test builds it)",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.env_remove("QUPID_LEDGER")
        .env_remove("QUPID_NAMESPACE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_is_usage_on_stdout_and_succeeds() {
    for flag in ["--help", "-h"] {
        let out = example().arg(flag).output().expect("run the example");
        assert!(out.status.success(), "{flag}: {:?}", out.status);
        let stdout = text(&out.stdout);
        assert!(stdout.starts_with("usage: poll_process_save"), "{stdout}");
        assert!(
            stdout.contains("--records N") && stdout.contains("--out DIR"),
            "{stdout}"
        );
        assert_eq!(text(&out.stderr), "", "{flag}");
    }
}

#[test]
fn a_bad_argument_is_one_line_and_exit_2() {
    let out = example().arg("--bogus").output().expect("run the example");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("\"--bogus\"") && stderr.contains("--help"),
        "{stderr}"
    );
}

/// `--out` naming a file: the error says which folder and why, in words, not a debug dump.
#[test]
fn an_unusable_out_folder_is_named() {
    let dir = tempfile::tempdir().expect("a folder");
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "x").expect("a file");
    let out = example()
        .args(["--memory", "--records", "10", "--out"])
        .arg(&file)
        .output()
        .expect("run the example");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot use {} as the output folder",
            file.display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Os {") && !stderr.contains("code:"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "x",
        "left as it was"
    );
}

/// `poll_process_save | head -1`: the first line is read, then stdout is closed while the run
/// goes on; the run still processes everything and exits 0, without a panic.
#[test]
fn a_closed_stdout_does_not_panic() {
    let dir = tempfile::tempdir().expect("a folder");
    let out_dir = dir.path().join("out");
    let mut child = example()
        .args(["--memory", "--records", "2000", "--out"])
        .arg(&out_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the example");
    let mut first = String::new();
    {
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("the first line");
        // The reader goes away, as `head -1` does: later writes find the pipe closed.
    }
    assert!(first.starts_with("datastore: 2000 records"), "{first}");
    let out = child.wait_with_output().expect("wait");
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    let saved = std::fs::read_dir(&out_dir)
        .expect("the output folder")
        .count();
    assert_eq!(saved, 2000, "the run finished its work");
}

/// The summary's rate is for people: whole numbers with thousands separators (`6,920/s`),
/// or one decimal below 10 (`4.5/s`), never the float's full digits.
#[test]
fn the_summary_rate_is_rounded() {
    let dir = tempfile::tempdir().expect("a folder");
    let out = example()
        .args(["--memory", "--records", "500", "--out"])
        .arg(dir.path().join("out"))
        .output()
        .expect("run the example");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|line| line.starts_with("500 records processed and saved to"))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    let rate = line
        .split_once(" (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(rate, _)| rate)
        .unwrap_or_else(|| panic!("no rate in {line:?}"));
    let number = rate
        .strip_suffix("/s")
        .unwrap_or_else(|| panic!("{rate:?} does not end in /s"));
    let whole = number.split(',').enumerate().all(|(i, group)| {
        !group.is_empty()
            && group.len() <= 3
            && (i == 0 || group.len() == 3)
            && group.bytes().all(|b| b.is_ascii_digit())
    });
    let small = number
        .split_once('.')
        .is_some_and(|(int, dec)| int.len() == 1 && dec.len() == 1);
    assert!(whole || small, "{rate:?} in {line:?}");
}
