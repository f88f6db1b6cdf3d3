//! One file per command. Each opens nothing itself: it gets the open ledger and whether to
//! print JSON, and prints its result (or returns an error for `run` to print).

mod list;
mod purge;
mod remove;
mod retry;
mod serve;
mod show;
mod stats;

use crate::args::Command;
use crate::target::{Access, Target};

/// Whether `command` only looks at the ledger or changes it: the commands that look open it
/// read-only, so they never create, migrate or change anything.
pub(crate) fn access(command: &Command) -> Access {
    match command {
        Command::Stats(_) | Command::List(_) | Command::Show(_) => Access::Read,
        Command::Purge(args) if args.dry_run => Access::Read,
        Command::Serve(args) if !args.allow_writes => Access::Read,
        Command::Remove(_) | Command::Retry(_) | Command::Purge(_) | Command::Serve(_) => {
            Access::Write
        }
    }
}

/// Runs `command` against `target`.
pub(crate) async fn run(command: Command, target: &Target, json: bool) -> anyhow::Result<()> {
    match command {
        Command::Stats(args) => stats::run(args, target, json).await,
        Command::List(args) => list::run(args, target, json).await,
        Command::Show(args) => show::run(args, target, json).await,
        Command::Remove(args) => remove::run(args, target, json).await,
        Command::Retry(args) => retry::run(args, target, json).await,
        Command::Purge(args) => purge::run(args, target, json).await,
        Command::Serve(args) => serve::run(args, target).await,
    }
}

/// "1 key", "2 keys".
fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The ledger, as named in messages: its URL, and its namespace where it has one.
fn ledger_name(target: &Target) -> String {
    match &target.namespace {
        Some(ns) => format!("{} (namespace {ns:?})", target.url),
        None => target.url.clone(),
    }
}
