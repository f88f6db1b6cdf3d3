//! `qupid purge (--completed | --dead | both) --older-than AGE [--dry-run] [--yes]`.

use std::time::Duration;

use qupid::clock::Timestamp;
use qupid::{Keep, Retention, State};

use super::{ledger_name, plural};
use crate::args::PurgeArgs;
use crate::confirm::confirm;
use crate::duration;
use crate::error::print;
use crate::output::json::{self, PurgeJson};
use crate::output::time;
use crate::target::Target;

pub(super) async fn run(args: PurgeArgs, target: &Target, json: bool) -> anyhow::Result<()> {
    let age = args.older_than;
    let states: Vec<State> = [(args.completed, State::Completed), (args.dead, State::Dead)]
        .into_iter()
        .filter_map(|(chosen, s)| chosen.then_some(s))
        .collect();
    let names = states
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" and ");
    let (completed, dead, now) = if args.dry_run {
        let now = target.now().await?;
        let mut counts = [None, None];
        for (i, state) in [State::Completed, State::Dead].into_iter().enumerate() {
            if states.contains(&state) {
                counts[i] = Some(candidates(target, state, age, now).await?);
            }
        }
        (counts[0], counts[1], now)
    } else {
        confirm(
            &format!(
                "about to delete {names} records that finished {} or more ago from {}, for \
                 good",
                duration::format(age),
                ledger_name(target)
            ),
            args.yes,
        )?;
        let keep = |chosen: bool| {
            if chosen {
                Keep::younger_than(age)
            } else {
                Keep::FOREVER
            }
        };
        let now = target.now().await?;
        let purged = target
            .purge(&Retention {
                completed: keep(args.completed),
                dead: keep(args.dead),
            })
            .await?;
        (
            args.completed.then_some(purged.completed),
            args.dead.then_some(purged.dead),
            now,
        )
    };
    if json {
        return print(&json::line(&PurgeJson {
            dry_run: args.dry_run,
            older_than_secs: age.as_secs(),
            now_ms: now.as_millis(),
            completed,
            dead,
        })?);
    }
    let counts = [(completed, "completed"), (dead, "dead")]
        .into_iter()
        .filter_map(|(n, name)| {
            n.map(|n| plural(n, &format!("{name} record"), &format!("{name} records")))
        })
        .collect::<Vec<_>>()
        .join(" and ");
    let cutoff = Timestamp::from_millis(now.as_millis().saturating_sub(millis(age)));
    let text = if args.dry_run {
        format!(
            "dry run: would purge {counts} that finished {} or more ago (at or before {}); \
             nothing was changed\n",
            duration::format(age),
            time::utc(cutoff)
        )
    } else {
        format!(
            "purged {counts} that finished {} or more ago\n",
            duration::format(age)
        )
    };
    print(&text)
}

/// How many records in `state` a purge by age would remove now: those that finished `age`
/// or more before `now`, as [`Keep::younger_than`] rules (every ledger purges a record when
/// `now - finished_at >= age`, in whole milliseconds).
async fn candidates(
    target: &Target,
    state: State,
    age: Duration,
    now: Timestamp,
) -> anyhow::Result<u64> {
    let mut n = 0;
    target
        .scan(state, |r| {
            if r.finished_at.is_some_and(|at| now.since(at) >= age) {
                n += 1;
            }
        })
        .await?;
    Ok(n)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
