//! Serving a dashboard by itself, over real TCP: the default address, the refusal to open a
//! reachable address without a token, the `Host` check on loopback, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qupid::MemoryLedger;
use qupid_web::{Error, ServeConfig, Server, DEFAULT_BIND};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET path` over a connection of its own: the status and the body.
async fn http_get(addr: SocketAddr, path: &str, host: &str, extra: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n");
    conn.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn loopback_any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

#[test]
fn the_default_address_is_this_machine_only() {
    assert_eq!(DEFAULT_BIND, "127.0.0.1:7070".parse().expect("an address"));
    assert!(DEFAULT_BIND.ip().is_loopback());
}

#[test]
fn debug_output_never_shows_the_token() {
    let config = ServeConfig::new().token(Some("s3cret-t0ken".to_owned()));
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("s3cret-t0ken") && shown.contains("***"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_reachable_address_needs_a_token() {
    let ledger = Arc::new(MemoryLedger::new());
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let addr: SocketAddr = addr.parse().expect("an address");
        for token in [None, Some(String::new())] {
            let config = ServeConfig::new().bind(addr).token(token.clone());
            let e = Server::bind(ledger.clone(), config)
                .await
                .expect_err("refused without a token");
            assert!(matches!(e, Error::Config(_)), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("without a token") && msg.contains("QUPID_TOKEN"),
                "{msg}"
            );
        }
    }
    let e = Server::bind(
        ledger.clone(),
        ServeConfig::new()
            .bind("0.0.0.0:0".parse().expect("an address"))
            .token(Some("has space".to_owned())),
    )
    .await
    .expect_err("a token that cannot travel in a header");
    assert!(e.to_string().contains("visible ASCII"), "{e}");

    // With a token it serves, and every request must carry it.
    let server = Server::bind(
        ledger,
        ServeConfig::new()
            .bind("0.0.0.0:0".parse().expect("an address"))
            .token(Some("s3cret".to_owned())),
    )
    .await
    .expect("serves with a token");
    let port = server.local_addr().port();
    assert_eq!(server.url(), format!("http://127.0.0.1:{port}/"));
    assert!(server.describe().contains("a token is required"));
    let stop = tokio_util_like::Stop::new();
    let task = tokio::spawn(server.run(stop.wait()));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
    let (status, _) = http_get(addr, "/api/stats", "anything.example", "").await;
    assert_eq!(status, 401);
    let (status, body) = http_get(
        addr,
        "/api/stats",
        "anything.example",
        "Authorization: Bearer s3cret\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http_get(addr, "/healthz", "h", "Authorization: Bearer wrong\r\n").await;
    assert_eq!(status, 401);
    stop.fire();
    task.await.expect("joined").expect("a clean stop");
}

#[tokio::test]
async fn loopback_without_a_token_answers_local_hosts_only_and_stops_when_told() {
    let ledger = Arc::new(MemoryLedger::new());
    let server = Server::bind(
        ledger.clone(),
        ServeConfig::new()
            .bind(loopback_any_port())
            .ledger_name("memory:"),
    )
    .await
    .expect("serves on loopback without a token");
    let addr = server.local_addr();
    assert!(
        server.describe().contains("read-only"),
        "{}",
        server.describe()
    );
    // The port is taken: a second server there cannot listen.
    let e = Server::bind(ledger.clone(), ServeConfig::new().bind(addr))
        .await
        .expect_err("the port is in use");
    assert!(matches!(e, Error::Bind { .. }), "{e:?}");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");

    let stop = tokio_util_like::Stop::new();
    let task = tokio::spawn(server.run(stop.wait()));
    for host in [
        format!("127.0.0.1:{}", addr.port()),
        "localhost".to_owned(),
        "[::1]:7070".to_owned(),
    ] {
        let (status, body) = http_get(addr, "/", &host, "").await;
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.contains("memory:"), "the ledger is named");
    }
    let (status, body) = http_get(addr, "/", "rebound.example", "").await;
    assert_eq!(status, 403, "DNS rebinding is refused: {body}");
    let (status, _) = http_get(addr, "/metrics", "localhost", "").await;
    assert_eq!(status, 200);
    stop.fire();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops when told")
        .expect("joined")
        .expect("a clean stop");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "nothing listens after the stop"
    );
}

/// A one-shot stop signal, as a future the server waits on.
mod tokio_util_like {
    use std::sync::Arc;

    use tokio::sync::Notify;

    pub(crate) struct Stop(Arc<Notify>);

    impl Stop {
        pub(crate) fn new() -> Stop {
            Stop(Arc::new(Notify::new()))
        }

        pub(crate) fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
            let n = self.0.clone();
            async move { n.notified().await }
        }

        pub(crate) fn fire(&self) {
            self.0.notify_one();
        }
    }
}
