//! The command line: options, commands and their arguments.

use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use qupid::State;

/// `--help` beyond the summary: URLs, exit codes and where the JSON shapes are documented.
const LONG_ABOUT: &str = "\
Inspect and repair a qupid ledger: the store of each key's state (queued, running, completed, \
dead) shared by a pipeline's workers.

Ledger URLs:
  sqlite://PATH                     a ledger file (sqlite:///abs/path for an absolute path);
                                    the file must exist: the tool never creates one
  redis://[:PASSWORD@]HOST[:PORT][/DB]
  redis+cluster://[:PASSWORD@]HOST:PORT,HOST:PORT,...
                                    a Redis Cluster, through any of its nodes
  postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE
  memory:                           an empty in-process ledger (for trying the tool out)

Times are shown relative to the ledger's own clock (\"in 12s\", \"3m ago\"). Keys are typed as \
they are. Tables show them with backslashes doubled and control characters escaped (\\n, \\t, \
\\x1b) as bash's $'...' quoting writes them, so a key shown as a\\nb is typed back as $'a\\nb'; \
tables cut keys past 64 characters; --json shows them exactly.

Exit codes:
  0  success
  1  not found, refused (a leased key without --force), or declined at the prompt
  2  usage error, bad URL, unreachable server, no qupid ledger where a command that only \
looks (stats, list, show, purge --dry-run) looked, or any other ledger error

Commands that only look open the ledger read-only: they never create, migrate or change it.

--json prints one JSON object per command (one per line with `stats --watch`); the shapes are \
documented in the qupid-cli README and crate docs, and stay stable.";

/// The `qupid` command line.
#[derive(Debug, Parser)]
#[command(name = "qupid", version, about = "Inspect and repair a qupid ledger", long_about = LONG_ABOUT)]
pub(crate) struct Cli {
    /// The ledger's URL, required: sqlite://PATH, redis://HOST, postgres://USER@HOST/DB or
    /// memory:
    #[arg(
        long,
        env = "QUPID_LEDGER",
        value_name = "URL",
        global = true,
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub(crate) ledger: Option<String>,

    /// The queue's namespace in a shared Redis or PostgreSQL (1 to 48 of a-z, 0-9 and _;
    /// ignored by sqlite and memory)
    #[arg(
        long,
        env = "QUPID_NAMESPACE",
        value_name = "NS",
        default_value = qupid::ledger::DEFAULT_NAMESPACE,
        global = true,
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub(crate) namespace: String,

    /// Print JSON instead of tables (one object; one per line with `stats --watch`)
    #[arg(long, global = true, help_heading = "Global options")]
    pub(crate) json: bool,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Counts per state, the expired leases, the oldest lease expiry, and the ledger's clock
    Stats(StatsArgs),
    /// One page of the records in a state, in key order
    List(ListArgs),
    /// Everything the ledger holds about one key
    Show(ShowArgs),
    /// Remove records so their keys are processed again at their next offer
    Remove(RemoveArgs),
    /// Retry dead records: remove them so their keys are processed again at their next offer
    Retry(RetryArgs),
    /// Delete completed and/or dead records that finished long enough ago
    Purge(PurgeArgs),
    /// Serve a web dashboard of the ledger (read-only unless --allow-writes)
    Serve(ServeArgs),
}

/// `qupid serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on; any address but loopback needs a token
    #[arg(long, value_name = "ADDR", default_value_t = qupid_web::DEFAULT_BIND)]
    pub(crate) bind: std::net::SocketAddr,

    /// Allow retry, remove and purge from the browser (each confirmed first)
    #[arg(long)]
    pub(crate) allow_writes: bool,

    /// A token every request must carry (a bearer header, or log in once in the browser)
    #[arg(
        long,
        env = "QUPID_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
}

/// `qupid stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Refresh every SECS seconds (default 2) until Ctrl-C
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        default_missing_value = "2",
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub(crate) watch: Option<u64>,
}

/// `qupid list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The state to list
    #[arg(long, value_enum)]
    pub(crate) state: StateArg,

    /// At most this many records
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) limit: u32,

    /// Start after this key: the `next` cursor of the previous page
    #[arg(long, value_name = "CURSOR")]
    pub(crate) after: Option<String>,
}

/// `qupid show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The key
    pub(crate) key: String,
}

/// `qupid remove`.
#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    /// The keys
    #[arg(required = true, value_name = "KEY")]
    pub(crate) keys: Vec<String>,

    /// Remove queued and running keys too: their holders lose their leases (fenced out)
    #[arg(long)]
    pub(crate) force: bool,

    /// Do not ask for confirmation (--force asks)
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

/// `qupid retry`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["keys", "all_dead"])))]
pub(crate) struct RetryArgs {
    /// The dead keys to retry
    #[arg(value_name = "KEY")]
    pub(crate) keys: Vec<String>,

    /// Retry every dead record (asks for confirmation)
    #[arg(long, conflicts_with = "keys")]
    pub(crate) all_dead: bool,

    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

/// `qupid purge`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("states").required(true).multiple(true).args(["completed", "dead"])))]
pub(crate) struct PurgeArgs {
    /// Purge completed records
    #[arg(long)]
    pub(crate) completed: bool,

    /// Purge dead records
    #[arg(long)]
    pub(crate) dead: bool,

    /// Only records that finished at least this long ago: 90s, 15m, 12h, 7d, 2w, or 1d12h
    #[arg(long, value_name = "AGE", required = true, value_parser = crate::duration::parse)]
    pub(crate) older_than: Duration,

    /// Count what would be purged; change nothing
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

/// A state, as written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StateArg {
    /// Leased, waiting for a worker or a retry
    Queued,
    /// Leased, being worked on
    Running,
    /// Saved successfully
    Completed,
    /// Out of attempts, or abandoned too often
    Dead,
}

impl From<StateArg> for State {
    fn from(s: StateArg) -> State {
        match s {
            StateArg::Queued => State::Queued,
            StateArg::Running => State::Running,
            StateArg::Completed => State::Completed,
            StateArg::Dead => State::Dead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
