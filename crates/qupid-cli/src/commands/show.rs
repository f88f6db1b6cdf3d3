//! `qupid show KEY`: everything the ledger holds about one key.

use qupid::clock::Timestamp;
use qupid::ledger::Record;

use crate::args::ShowArgs;
use crate::error::{print, refused};
use crate::output::json::{self, RecordJson};
use crate::output::{escape, time, Table};
use crate::target::{key, Target};

pub(super) async fn run(args: ShowArgs, target: &Target, json: bool) -> anyhow::Result<()> {
    let key = key(&args.key)?;
    let Some(record) = target.get(&key).await? else {
        return Err(refused(format!(
            "no record of key {:?} in {}",
            key.as_str(),
            super::ledger_name(target)
        )));
    };
    if json {
        return print(&json::line(&RecordJson::from(&record))?);
    }
    let now = target.now().await?;
    print(&table(&record, now).render())
}

/// The record as a two-column table, one field a line.
fn table(r: &Record, now: Timestamp) -> Table {
    let none = || "-".to_owned();
    let at = |t: Option<Timestamp>| t.map_or_else(none, |t| time::both(t, now));
    let mut t = Table::headless();
    t.row(["key", &escape(r.key.as_str())]);
    t.row(["state", r.state.as_str()]);
    t.row([
        "version",
        &r.version.as_ref().map_or_else(none, |v| escape(v.as_str())),
    ]);
    t.row([
        "newer version",
        &r.newer_version
            .as_ref()
            .map_or_else(none, |v| escape(v.as_str())),
    ]);
    t.row(["attempts", &r.attempts.to_string()]);
    t.row(["abandoned", &r.abandoned.to_string()]);
    t.row(["token", &r.token.to_string()]);
    t.row(["lease expires", &at(r.expires_at)]);
    t.row(["finished at", &at(r.finished_at)]);
    t.row([
        "last error",
        &r.last_error.as_deref().map_or_else(none, escape),
    ]);
    t.row(["superseded", if r.superseded { "yes" } else { "no" }]);
    t
}
