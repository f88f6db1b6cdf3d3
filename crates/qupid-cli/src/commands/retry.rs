//! `qupid retry KEY...` and `qupid retry --all-dead [--yes]`: Dead records gone, keys
//! processed again at their next offer.

use qupid::ledger::{ListQuery, Retried};
use qupid::{Key, State};

use super::{ledger_name, plural};
use crate::args::RetryArgs;
use crate::confirm::confirm;
use crate::error::{print, refused};
use crate::output::json::{self, OutcomeJson, RetryJson};
use crate::output::{key_cell, Table};
use crate::target::{keys, Target};

/// How many dead records `--all-dead` lists and retries per round trip.
const PAGE: usize = 1_000;

pub(super) async fn run(args: RetryArgs, target: &Target, json: bool) -> anyhow::Result<()> {
    let (keys, outcomes) = if args.all_dead {
        let Some(retried) = all_dead(target, args.yes).await? else {
            // Nothing to confirm, nothing to do: not a refusal.
            if json {
                return print(&json::line(&RetryJson {
                    all_dead: true,
                    retried: 0,
                    results: Vec::new(),
                })?);
            }
            return print(&format!(
                "nothing to retry: {} has no dead records\n",
                ledger_name(target)
            ));
        };
        retried
    } else {
        let keys = keys(&args.keys)?;
        let outcomes = target.retry(&keys).await?;
        (keys, outcomes)
    };
    let count = |f: fn(&Retried) -> bool| outcomes.iter().filter(|o| f(o)).count() as u64;
    let retried = count(|o| matches!(o, Retried::Retried));
    let not_found = count(|o| matches!(o, Retried::NotFound));
    let not_dead = count(|o| matches!(o, Retried::NotDead(_)));
    if json {
        print(&json::line(&RetryJson {
            all_dead: args.all_dead,
            retried,
            results: keys
                .iter()
                .zip(&outcomes)
                .map(|(k, o)| OutcomeJson::retried(k, *o))
                .collect(),
        })?)?;
    } else if args.all_dead {
        print(&format!(
            "retried {}: they are processed again at their next offer\n",
            plural(retried, "dead record", "dead records")
        ))?;
    } else {
        let mut table = Table::new(["KEY", "OUTCOME"]);
        for (k, o) in keys.iter().zip(&outcomes) {
            let outcome = match o {
                Retried::Retried => "retried".to_owned(),
                Retried::NotFound => "not found".to_owned(),
                Retried::NotDead(state) => format!("refused: {state}, not dead"),
            };
            table.row([key_cell(k.as_str()), outcome]);
        }
        print(&table.render())?;
    }
    let mut problems = Vec::new();
    if not_dead > 0 {
        problems.push(format!(
            "{} not dead, so not retried (use `qupid remove` for completed keys)",
            plural(not_dead, "key was", "keys were")
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

/// Asks, then retries every Dead record a page at a time. Keys that stopped being Dead in
/// between (offered again with a new version, removed) are answered as such. `None`, without
/// asking, when there is no Dead record.
async fn all_dead(target: &Target, yes: bool) -> anyhow::Result<Option<(Vec<Key>, Vec<Retried>)>> {
    let dead = target.stats().await?.dead;
    if dead == 0 {
        return Ok(None);
    }
    confirm(
        &format!(
            "about to retry every dead record in {} ({} now): each is removed, and its key is \
             processed again at its next offer",
            ledger_name(target),
            dead
        ),
        yes,
    )?;
    let (mut keys, mut outcomes) = (Vec::new(), Vec::new());
    let mut query = ListQuery::new(State::Dead).limit(PAGE);
    loop {
        let page = target.list(&query).await?;
        let batch: Vec<Key> = page.records.into_iter().map(|r| r.key).collect();
        if !batch.is_empty() {
            outcomes.extend(target.retry(&batch).await?);
            keys.extend(batch);
        }
        // Listing after the last key of the page keeps going even though the page's keys
        // are gone now.
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(Some((keys, outcomes))),
        }
    }
}
