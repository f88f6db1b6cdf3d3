//! `qupid serve`: the web dashboard of `qupid_web` over the ledger the URL names.

use crate::args::ServeArgs;
use crate::target::Target;

/// Serves until Ctrl-C or SIGTERM. A ledger opened for looking only (no `--allow-writes`)
/// is read-only, so the dashboard cannot change it even if asked.
pub(super) async fn run(args: ServeArgs, target: &Target) -> anyhow::Result<()> {
    let config = qupid_web::ServeConfig::new()
        .bind(args.bind)
        .allow_writes(args.allow_writes)
        .token(args.token)
        .ledger_name(&target.url)
        .namespace(target.namespace.as_deref());
    let server = qupid_web::Server::bind(target.ledger(), config).await?;
    eprintln!("qupid: {}; Ctrl-C to stop", server.describe());
    server.run(qupid_web::shutdown_signal()).await?;
    Ok(())
}
