//! `qupid serve`: the real binary serves the dashboard of each ledger, read-only unless
//! told, refuses a reachable address without a token, and stops on SIGINT with status 0.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// `qupid serve` on a spare port; answers the child and the dashboard's address.
fn serve(b: &Backend, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qupid"))
        .env_remove("QUPID_LEDGER")
        .env_remove("QUPID_NAMESPACE")
        .env_remove("QUPID_TOKEN")
        .args(["--ledger", &b.url, "--namespace", &b.namespace, "serve"])
        .args(["--bind", "127.0.0.1:0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qupid serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut line = String::new();
    BufReader::new(stderr)
        .read_line(&mut line)
        .expect("the first line");
    // "qupid: the dashboard is at http://127.0.0.1:PORT/ (read-only); Ctrl-C to stop"
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ' ']).next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    assert!(
        line.contains("read-only") != extra.contains(&"--allow-writes"),
        "{line}"
    );
    (child, addr)
}

/// One HTTP/1.1 request; answers the status and the body.
fn request(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {out:?}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

fn stop(mut child: Child) {
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "qupid serve exits 0 on SIGINT: {status}");
}

macro_rules! on_every_ledger {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name(&super::Backend::sqlite()) })* }
        mod redis { $(#[test] fn $name() { super::$name(&super::Backend::redis()) })* }
        mod postgres { $(#[test] fn $name() { super::$name(&super::Backend::postgres()) })* }
    };
}

on_every_ledger!(serves_the_ledgers_counts_read_only_by_default);

fn serves_the_ledgers_counts_read_only_by_default(b: &Backend) {
    b.fill();
    let (child, addr) = serve(b, &[]);
    let (status, body) = request(&addr, "GET", "/api/stats");
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        stats["total"],
        serde_json::json!(filled().total()),
        "{stats}"
    );
    let (status, page) = request(&addr, "GET", "/");
    assert_eq!(status, 200);
    assert!(
        page.contains(&filled().completed.to_string()),
        "the overview shows the counts"
    );
    let (status, _) = request(&addr, "POST", "/retry");
    assert_eq!(status, 403, "read-only refuses writes");
    stop(child);
}

#[test]
fn a_reachable_address_without_a_token_is_refused() {
    let b = Backend::sqlite();
    b.fill();
    qupid()
        .args(["--ledger", &b.url, "serve", "--bind", "0.0.0.0:0"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("token"));
}
