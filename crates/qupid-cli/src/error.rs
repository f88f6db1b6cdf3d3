//! Exit codes, the errors that are not failures of the tool (a refusal, a closed stdout),
//! and writing to stdout.

use std::fmt;
use std::process::ExitCode;

/// The command did what it was asked not to do without more: a key was not found, a leased
/// key was not forced, the user declined. Exits 1; every other error exits 2.
#[derive(Debug)]
pub(crate) struct Refusal(pub(crate) String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// A [`Refusal`] as an `anyhow` error.
pub(crate) fn refused(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Refusal(message.into()))
}

/// The exit code for an error: 0 when stdout was closed ([`StdoutClosed`]), 1 for a
/// [`Refusal`], 2 for anything else (usage, URL, connection, ledger).
pub(crate) fn exit_code(err: &anyhow::Error) -> ExitCode {
    if err.downcast_ref::<StdoutClosed>().is_some() {
        ExitCode::SUCCESS
    } else if err.downcast_ref::<Refusal>().is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::from(2)
    }
}

/// An error as one line: its message, then its causes' messages where they add something,
/// with line breaks flattened.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        // Ledger errors repeat their driver's message in their own: skip what is said already.
        if msg.is_empty() || line.contains(msg.as_str()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&msg);
    }
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// A usage error of clap's as one line: its message and any context lines (the values a
/// setting takes, a tip), joined with `; `, then the `--help` to read: that of the usage clap
/// shows, else of `command`, else the tool's. Clap's own rendering spreads them over several
/// lines, with the usage and a blank line between.
pub(crate) fn usage_line(e: &clap::Error, command: Option<&str>) -> String {
    let text = e.to_string();
    let mut parts: Vec<&str> = Vec::new();
    let mut help = match command {
        Some(c) => format!("qupid {c} --help"),
        None => "qupid --help".to_owned(),
    };
    for line in text.lines().map(str::trim) {
        if let Some(usage) = line.strip_prefix("Usage:") {
            // `Usage: qupid list --state <STATE> …`: the command's own --help says more.
            let words: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['-', '<', '[']))
                .collect();
            if !words.is_empty() {
                help = format!("{} --help", words.join(" "));
            }
            break;
        }
        if !line.is_empty() && !line.starts_with("For more information") {
            parts.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    let mut out = String::new();
    for part in parts {
        if !out.is_empty() {
            // "…were not provided:" reads on into its list.
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(part);
    }
    out.push_str(&format!(" (see `{help}`)"));
    out
}

/// Stdout was closed by its reader (`qupid list … | head`): not worth a message, and not a
/// failure. Exits 0.
#[derive(Debug)]
pub(crate) struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `text` to stdout at once.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => anyhow::Error::new(StdoutClosed),
            _ => anyhow::anyhow!("cannot write to stdout: {e}"),
        })
}
