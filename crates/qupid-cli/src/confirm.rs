//! The question before a dangerous command: "proceed? [y/N]".

use std::io::{BufRead, Write};

use crate::error::refused;

/// Says what is about to happen on stderr and asks to proceed, unless `yes`.
///
/// Reads one line of stdin (a terminal, or a pipe in scripts and tests). Only `y` or `yes`
/// proceeds; anything else declines, and end of input (no terminal, `< /dev/null`) refuses
/// with a hint to pass `--yes`. Both are [`Refusal`](crate::error::Refusal)s: exit 1.
pub(crate) fn confirm(what: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    let mut err = std::io::stderr().lock();
    // A prompt that cannot be shown still gets its answer read: ignore write errors.
    let _ = write!(err, "{what}\nproceed? [y/N] ");
    let _ = err.flush();
    drop(err);
    let mut answer = String::new();
    let read = std::io::stdin().lock().read_line(&mut answer);
    match read {
        Ok(0) | Err(_) => {
            let _ = writeln!(std::io::stderr());
            Err(refused(
                "no answer on stdin (is it a terminal?), so nothing was changed: pass --yes to \
                 proceed without asking",
            ))
        }
        Ok(_) if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") => Ok(()),
        Ok(_) => Err(refused("declined: nothing was changed")),
    }
}
