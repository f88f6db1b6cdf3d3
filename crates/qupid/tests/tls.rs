//! TLS against real servers: a `redis-server` with a TLS port and a PostgreSQL cluster with
//! `ssl = on`, both on a CA and server certificate made here at test time, and started by
//! the tests on spare ports (so the shared servers are not touched).
//!
//! Needs `redis-server` (built with TLS, as Debian's is) and PostgreSQL's server binaries
//! (`initdb`, `postgres`; Debian's `postgresql` package). Run as root, the PostgreSQL cluster
//! runs as the `postgres` user.

#![cfg(all(feature = "redis", feature = "postgres"))]

mod redis_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qupid::ledger::{AnyLedger, Offered};
use qupid::{ErrorKind, Key, LedgerAdmin, Offer, Policy};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use redis_support::SpareServer;
use tempfile::TempDir;

/// A CA, a server certificate it signed (for `localhost` and 127.0.0.1), and a CA that
/// signed nothing here.
struct Pki {
    dir: TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a ca")
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let authority = ca("qupid test CA");
    let other = ca("some other CA");
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params
        .signed_by(&key, &authority)
        .expect("a server certificate");
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write a pem file");
        path
    };
    Pki {
        ca: write("ca.pem", authority.pem()),
        other_ca: write("other-ca.pem", other.pem()),
        cert: write("server.pem", cert.pem()),
        key: write("server.key", key.serialize_pem()),
        dir,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn works<L: LedgerAdmin>(l: &L) {
    let out = l
        .offer(
            &Policy::default(),
            &[Offer::new(Key::new("k").expect("key"))],
        )
        .await
        .expect("offer over TLS");
    assert!(matches!(out[0], Offered::Accepted(_)), "{out:?}");
}

fn says_tls_failed(e: &qupid::Error) {
    assert_eq!(e.kind(), ErrorKind::Config, "not worth retrying: {e}");
    let m = e.to_string();
    assert!(m.contains("TLS handshake failed"), "names the cause: {m}");
    assert!(m.contains("certificate"), "names the certificate: {m}");
}

// ---- Redis ----

/// A spare `redis-server` with a plain port (for its health check) and a TLS port.
fn redis_tls(pki: &Pki) -> (SpareServer, u16) {
    let tls_port = free_port();
    let server = SpareServer::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &pki.cert.display().to_string(),
        "--tls-key-file",
        &pki.key.display().to_string(),
        "--tls-ca-cert-file",
        &pki.ca.display().to_string(),
        "--tls-auth-clients",
        "no",
    ]);
    (server, tls_port)
}

#[tokio::test]
async fn redis_over_tls_with_the_servers_ca() {
    let pki = pki();
    let (_server, port) = redis_tls(&pki);
    let url = format!(
        "rediss://127.0.0.1:{port}/0?tls_ca_file={}",
        pki.ca.display()
    );
    let l = AnyLedger::open(&url, "tls")
        .await
        .expect("connects over TLS");
    works(&l).await;
    // The same through a host name the certificate names.
    let url = format!(
        "rediss://localhost:{port}/0?tls_ca_file={}",
        pki.ca.display()
    );
    works(&AnyLedger::open(&url, "tls2").await.expect("by name")).await;
}

#[tokio::test]
async fn redis_over_tls_refuses_a_certificate_of_another_ca() {
    let pki = pki();
    let (_server, port) = redis_tls(&pki);
    let wrong = format!(
        "rediss://127.0.0.1:{port}/0?tls_ca_file={}",
        pki.other_ca.display()
    );
    says_tls_failed(&AnyLedger::open(&wrong, "tls").await.expect_err("untrusted"));
    // Without a CA file, the system's roots do not know this CA either.
    let system = format!("rediss://127.0.0.1:{port}/0");
    says_tls_failed(
        &AnyLedger::open(&system, "tls")
            .await
            .expect_err("untrusted"),
    );
}

#[tokio::test]
async fn redis_over_tls_without_checks_only_when_asked() {
    let pki = pki();
    let (_server, port) = redis_tls(&pki);
    let url = format!("rediss://127.0.0.1:{port}/0#insecure");
    works(
        &AnyLedger::open(&url, "tls")
            .await
            .expect("insecure connects"),
    )
    .await;
    let missing = format!("rediss://127.0.0.1:{port}/0?tls_ca_file=/no/such/ca.pem");
    let e = AnyLedger::open(&missing, "tls").await.expect_err("no file");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("/no/such/ca.pem"), "{e}");
}

// ---- PostgreSQL ----

/// A throwaway PostgreSQL cluster with `ssl = on` on the test's certificate, on a spare
/// port, stopped when dropped.
struct TlsPostgres {
    child: Child,
    port: u16,
    data: PathBuf,
    _dir: TempDir,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| PathBuf::from(name))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args…`, as the `postgres` user when running as root (PostgreSQL refuses root).
fn as_server_user(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn give_to_server_user(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success(), "chown {}", path.display());
    }
}

fn postgres_tls(pki: &Pki) -> TlsPostgres {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    // The key must be the server user's own, readable by it alone.
    let key = dir.path().join("server.key");
    let cert = dir.path().join("server.pem");
    std::fs::copy(&pki.key, &key).expect("copy the key");
    std::fs::copy(&pki.cert, &cert).expect("copy the certificate");
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&key).expect("key").permissions(),
        0o600,
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod the key");
    give_to_server_user(dir.path());
    let initdb = as_server_user(
        &pg_bin("initdb"),
        &[
            "-D",
            &data.display().to_string(),
            "--auth=trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .output()
    .unwrap_or_else(|e| panic!("cannot run initdb (install PostgreSQL's server): {e}"));
    assert!(
        initdb.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&initdb.stderr)
    );
    let port = free_port();
    let socket_dir = dir.path().display().to_string();
    let child = as_server_user(
        &pg_bin("postgres"),
        &[
            "-D",
            &data.display().to_string(),
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            &format!("unix_socket_directories={socket_dir}"),
            "-c",
            "ssl=on",
            "-c",
            &format!("ssl_cert_file={}", cert.display()),
            "-c",
            &format!("ssl_key_file={}", key.display()),
            "-c",
            "fsync=off",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("start postgres");
    let server = TlsPostgres {
        child,
        port,
        data,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the TLS PostgreSQL cluster did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Listening is not yet accepting: wait until a plain connection is answered.
    let ready = pg_bin("pg_isready");
    while !Command::new(&ready)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            Instant::now() < deadline,
            "the TLS PostgreSQL cluster is not ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

impl TlsPostgres {
    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    /// How many of the ledger's connections (`application_name` `qupid:<ns>`) use TLS, and
    /// how many do not, as the server sees them.
    async fn encrypted(&self, ns: &str) -> (i64, i64) {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("a plain connection");
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
                 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
                &[&format!("qupid:{ns}")],
            )
            .await
            .expect("pg_stat_ssl");
        (row.get(0), row.get(1))
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        // SIGQUIT to the postmaster (not to `runuser`, which does not pass it on): an
        // immediate shutdown, its children included.
        let postmaster = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned));
        match postmaster {
            Some(pid) => {
                let _ = Command::new("kill").args(["-QUIT", &pid]).status();
            }
            None => {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_by_sslmode() {
    let pki = pki();
    let pg = postgres_tls(&pki);
    let ca = pki.ca.display().to_string();

    // verify-full: the certificate chains to the CA and names the host.
    let mut open = Vec::new();
    for (host, ns) in [("localhost", "full"), ("127.0.0.1", "fullip")] {
        let url = pg.url(host, &format!("sslmode=verify-full&sslrootcert={ca}"));
        let l = AnyLedger::open(&url, ns)
            .await
            .expect("verify-full connects");
        works(&l).await;
        open.push(l);
    }
    // (The ledgers are still open: their pooled connections are what the server counts.)
    let (tls, plain) = pg.encrypted("full").await;
    assert!(tls > 0 && plain == 0, "encrypted: {tls}, plain: {plain}");

    // verify-ca: the name may be any; verify-full then refuses it.
    let other_name = format!(
        "host=db.internal hostaddr=127.0.0.1 port={} user=postgres dbname=postgres \
         sslrootcert={ca}",
        pg.port
    );
    let ca_only =
        qupid::ledger::PostgresLedger::open(&format!("{other_name} sslmode=verify-ca"), "ca")
            .await
            .expect("verify-ca ignores the name");
    works(&ca_only).await;
    let e = qupid::ledger::PostgresLedger::open(
        &format!("{other_name} sslmode=verify-full"),
        "fullname",
    )
    .await
    .expect_err("verify-full checks the name");
    says_tls_failed(&e);

    // A certificate of another CA: refused, with the cause named.
    let wrong = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", pki.other_ca.display()),
    );
    says_tls_failed(
        &AnyLedger::open(&wrong, "wrong")
            .await
            .expect_err("untrusted"),
    );

    // require: encrypted without checks; disable: plain.
    let l = AnyLedger::open(&pg.url("127.0.0.1", "sslmode=require"), "req")
        .await
        .expect("require connects");
    works(&l).await;
    assert!(pg.encrypted("req").await.0 > 0);
    let l = AnyLedger::open(&pg.url("127.0.0.1", "sslmode=disable"), "plain")
        .await
        .expect("disable connects");
    works(&l).await;
    let (tls, plain) = pg.encrypted("plain").await;
    assert!(tls == 0 && plain > 0, "encrypted: {tls}, plain: {plain}");
    drop(open);
    drop(pki.dir);
}
