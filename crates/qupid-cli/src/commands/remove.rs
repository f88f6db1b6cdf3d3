//! `qupid remove KEY... [--force] [--yes]`: records gone, keys processed again at their next
//! offer.

use qupid::ledger::Removed;

use super::{ledger_name, plural};
use crate::args::RemoveArgs;
use crate::confirm::confirm;
use crate::error::{print, refused};
use crate::output::json::{self, OutcomeJson, RemoveJson};
use crate::output::{key_cell, Table};
use crate::target::{keys, Target};

pub(super) async fn run(args: RemoveArgs, target: &Target, json: bool) -> anyhow::Result<()> {
    let keys = keys(&args.keys)?;
    if args.force {
        confirm(
            &format!(
                "about to remove {} from {}, queued and running ones included: a worker \
                 holding one loses its lease (fenced out), and the key is processed again at \
                 its next offer",
                plural(keys.len() as u64, "key", "keys"),
                ledger_name(target)
            ),
            args.yes,
        )?;
    }
    let outcomes = target.remove(&keys, args.force).await?;
    let removed = outcomes
        .iter()
        .filter(|o| matches!(o, Removed::Removed))
        .count() as u64;
    let not_found = outcomes
        .iter()
        .filter(|o| matches!(o, Removed::NotFound))
        .count() as u64;
    let leased = outcomes
        .iter()
        .filter(|o| matches!(o, Removed::Leased(_)))
        .count() as u64;
    if json {
        print(&json::line(&RemoveJson {
            force: args.force,
            removed,
            results: keys
                .iter()
                .zip(&outcomes)
                .map(|(k, o)| OutcomeJson::removed(k, *o))
                .collect(),
        })?)?;
    } else {
        let mut table = Table::new(["KEY", "OUTCOME"]);
        for (k, o) in keys.iter().zip(&outcomes) {
            let outcome = match o {
                Removed::Removed => "removed".to_owned(),
                Removed::NotFound => "not found".to_owned(),
                Removed::Leased(state) => format!("refused: {state} (leased)"),
            };
            table.row([key_cell(k.as_str()), outcome]);
        }
        print(&table.render())?;
    }
    let mut problems = Vec::new();
    if leased > 0 {
        problems.push(format!(
            "refused to remove {} (queued or running): a worker may be processing it; pass \
             --force to remove it anyway, fencing its holder out",
            plural(leased, "leased key", "leased keys")
        ));
    }
    if not_found > 0 {
        problems.push(format!(
            "{} no record in {}",
            plural(not_found, "key had", "keys had"),
            ledger_name(target)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(refused(problems.join("; ")))
    }
}
