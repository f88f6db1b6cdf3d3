//! `qupid list --state STATE [--limit N] [--after CURSOR]`: one page of a state.

use qupid::ledger::{ListQuery, Record};
use qupid::State;

use crate::args::ListArgs;
use crate::error::print;
use crate::output::json::{self, ListJson, RecordJson};
use crate::output::{escape, escape_short, key_cell, shell_quote, time, Align, Table};
use crate::target::{key, Target};

/// How much of a last error a table shows; `show` prints it whole.
const ERROR_WIDTH: usize = 60;

pub(super) async fn run(args: ListArgs, target: &Target, json: bool) -> anyhow::Result<()> {
    let state = State::from(args.state);
    let mut query = ListQuery::new(state).limit(args.limit as usize);
    if let Some(after) = &args.after {
        query = query.after(key(after)?);
    }
    let page = target.list(&query).await?;
    if json {
        return print(&json::line(&ListJson {
            state: state.as_str(),
            records: page.records.iter().map(RecordJson::from).collect(),
            next: page.next.as_ref().map(|k| k.as_str()),
        })?);
    }
    if page.records.is_empty() {
        let text = match &args.after {
            Some(after) => format!("no {state} records after {}\n", shell_quote(after)),
            None => format!("no {state} records\n"),
        };
        return print(&text);
    }
    let now = target.now().await?;
    let mut text = table(state, &page.records, now).render();
    if let Some(next) = &page.next {
        // Quoted so that the shell reads it back as the key, whatever it holds.
        text.push_str(&format!(
            "next page: --after {}\n",
            shell_quote(next.as_str())
        ));
    }
    print(&text)
}

/// The page as a table. The time column is the lease expiry for leased states and the
/// finish time for finished ones; the last error appears when any record has one.
fn table(state: State, records: &[Record], now: qupid::clock::Timestamp) -> Table {
    let errors = records.iter().any(|r| r.last_error.is_some());
    let when = if state.is_leased() {
        "LEASE EXPIRES"
    } else {
        "FINISHED"
    };
    let mut header = vec!["KEY", "VERSION", "ATTEMPTS", "TOKEN", when];
    if errors {
        header.push("LAST ERROR");
    }
    let mut table = Table::new(header)
        .align(2, Align::Right)
        .align(3, Align::Right);
    for r in records {
        let at = if state.is_leased() {
            r.expires_at
        } else {
            r.finished_at
        };
        let mut row = vec![
            key_cell(r.key.as_str()),
            r.version
                .as_ref()
                .map_or_else(|| "-".to_owned(), |v| escape(v.as_str())),
            r.attempts.to_string(),
            r.token.to_string(),
            at.map_or_else(|| "-".to_owned(), |at| time::relative(at, now)),
        ];
        if errors {
            row.push(
                r.last_error
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |e| escape_short(e, ERROR_WIDTH)),
            );
        }
        table.row(row);
    }
    table
}
