//! The `qupid` command-line tool, as a library: [`run`] is the whole program, and
//! `src/main.rs` only calls it (so the tool's behaviour is documented and tested in one
//! place). The manual — commands, exit codes and the `--json` shapes — is the crate's
//! README, below.
//!
#![doc = include_str!("../README.md")]

mod args;
mod commands;
mod confirm;
mod duration;
mod error;
mod output;
mod target;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::args::Cli;
use crate::error::{exit_code, one_line, usage_line, StdoutClosed};
use crate::target::Target;

/// Runs the tool with `args` (the program name first, as in [`std::env::args_os`]) and
/// answers the process's exit code. Prints to stdout and stderr; reads stdin only to confirm
/// a dangerous command. Never panics on bad input or a failing server.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // The command named, for a usage error's pointer to its --help.
    let named = args.iter().skip(1).find_map(|a| {
        let a = a.to_str()?;
        Cli::command()
            .get_subcommands()
            .any(|c| c.get_name() == a)
            .then(|| a.to_owned())
    });
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e, named.as_deref()),
    };
    let Some(url) = cli.ledger.clone() else {
        let e = Cli::command().error(
            clap::error::ErrorKind::MissingRequiredArgument,
            "the ledger's URL is required: pass --ledger URL or set QUPID_LEDGER",
        );
        return usage_error(&e, None);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(async {
            let access = commands::access(&cli.command);
            let target = Target::open(&url, &cli.namespace, access).await?;
            commands::run(cli.command, &target, cli.json).await
        }),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<StdoutClosed>().is_none() {
                let _ = writeln!(std::io::stderr(), "qupid: {}", one_line(&e));
            }
            exit_code(&e)
        }
    }
}

/// Help and `--version` go to stdout and exit 0; a usage error is one line on stderr, as
/// every error is (`qupid: …`), and exits 2. `command` is the command the arguments name, if
/// any, for the `--help` to point to.
fn usage_error(e: &clap::Error, command: Option<&str>) -> ExitCode {
    use clap::error::ErrorKind;
    let line = match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // `qupid` alone: clap would print the whole help on stderr.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            "expected a command (stats, list, show, remove, retry or purge), found none (see \
             `qupid --help`)"
                .to_owned()
        }
        _ => usage_line(e, command),
    };
    let _ = writeln!(std::io::stderr(), "qupid: {line}");
    ExitCode::from(2)
}
