//! Serves the dashboard of any ledger by URL, as `qupid serve` does:
//!
//! ```sh
//! cargo run -p qupid-web --example serve -- --ledger sqlite://qupid-example.db
//! cargo run -p qupid-web --example serve -- --ledger redis://127.0.0.1:6379 --namespace orders \
//!     --bind 0.0.0.0:7070 --token "$(openssl rand -hex 16)" --allow-writes
//! ```
//!
//! Options: `--ledger URL` (or `QUPID_LEDGER`), `--namespace NS` (or `QUPID_NAMESPACE`,
//! default `default`), `--bind ADDR` (default `127.0.0.1:7070`), `--allow-writes`,
//! `--token T` (or `QUPID_TOKEN`; required to bind anything but loopback).

use std::net::SocketAddr;
use std::process::ExitCode;

use qupid::AnyLedger;
use qupid_web::{ServeConfig, Server, DEFAULT_BIND};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut url = std::env::var("QUPID_LEDGER").ok();
    let mut namespace = std::env::var("QUPID_NAMESPACE")
        .unwrap_or_else(|_| qupid::ledger::DEFAULT_NAMESPACE.to_owned());
    let mut bind: SocketAddr = DEFAULT_BIND;
    let mut token = std::env::var("QUPID_TOKEN").ok();
    let mut writes = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--ledger" => url = Some(value()?),
            "--namespace" => namespace = value()?,
            "--bind" => bind = value()?.parse()?,
            "--token" => token = Some(value()?),
            "--allow-writes" => writes = true,
            _ => return Err(format!("unknown argument {arg:?}").into()),
        }
    }
    let url = url.ok_or("pass --ledger URL or set QUPID_LEDGER")?;
    let ledger = AnyLedger::open(&url, &namespace).await?;
    let has_namespace = !matches!(ledger, AnyLedger::Memory(_) | AnyLedger::Sqlite(_));
    let config = ServeConfig::new()
        .bind(bind)
        .allow_writes(writes)
        .token(token)
        .ledger_name(&url)
        .namespace(has_namespace.then_some(namespace.as_str()));
    let server = Server::bind(ledger, config).await?;
    eprintln!("{}; Ctrl-C to stop", server.describe());
    server.run(qupid_web::shutdown_signal()).await?;
    Ok(())
}
