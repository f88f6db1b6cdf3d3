//! `/`: counts per state, the leases, the throughput chart, and the most recent dead
//! records.

use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::html;
use qupid::clock::Timestamp;
use qupid::{LedgerAdmin, State};

use super::{layout, records_table, Base, Nav};
use crate::dashboard::AppState;
use crate::error::Fail;
use crate::snapshot::{self, Snapshot};
use crate::{sampler, text};

/// How many dead records the overview shows.
const RECENT_DEAD: usize = 10;

pub(crate) async fn page<L: LedgerAdmin>(
    AxState(s): AppState<L>,
    Extension(Base(base)): Extension<Base>,
) -> Response {
    sampler::start(&s);
    let snap = match s.snapshot.get(&s.ledger).await {
        Ok(snap) => snap,
        Err(e) => return Fail::ledger("reading the ledger's counts", &e).into_response(),
    };
    let (dead, truncated) =
        match snapshot::recent_dead(&s.ledger, RECENT_DEAD, s.options.scan_limit).await {
            Ok(d) => d,
            Err(e) => return Fail::ledger("reading the dead records", &e).into_response(),
        };
    let Snapshot {
        stats,
        now,
        oldest_lease,
    } = *snap;
    let body = html! {
        h1 { "Overview" }
        section.cards {
            @for st in State::ALL {
                a class={ "card " (st) } href={ (base) "/list/" (st) } {
                    span.count id={ "count-" (st) } { (stats.count(st)) }
                    span.label { (st) }
                }
            }
            div.card.total {
                span.count id="count-total" { (stats.total()) }
                span.label { "total" }
            }
        }
        dl.facts {
            dt { "expired leases" }
            dd id="expired" { (expired_text(stats.expired)) }
            dt { "oldest lease" }
            dd id="oldest-lease" { (lease_text(oldest_lease, now)) }
            dt { "ledger clock" }
            dd id="clock" { (text::utc(now)) }
            dt { "live" }
            dd { span id="live" data-state="waiting" { "waiting for the first refresh" } }
        }
        section.chart {
            h2 { "Throughput" }
            p.legend {
                span.key-completed { "completed/s " span id="rate-completed" { "-" } }
                " "
                span.key-dead { "dead/s " span id="rate-dead" { "-" } }
                " "
                span.hint { "(the mean of the last 5 samples; sampled every " (text::format_duration_ms(s.options.sample_every.as_millis())) " from the ledger's counts)" }
            }
            svg id="chart" role="img" aria-label="records completed and dead per second" {
                text x="50%" y="50%" text-anchor="middle" class="empty" { "collecting samples…" }
            }
        }
        section {
            h2 { "Recent dead records" }
            @if dead.is_empty() {
                p.none { "No dead records." }
            } @else {
                @if truncated {
                    p.hint { "The most recent among the first " (s.options.scan_limit) " dead records in key order." }
                }
                (records_table(&s, &base, State::Dead, &dead, now, s.options.allow_writes))
                p { a href={ (base) "/list/dead" } { "all dead records →" } }
            }
        }
    };
    layout(&s, &base, "overview", Nav::Overview, true, body)
}

/// The expired leases as the overview says them (the live script says them alike).
fn expired_text(n: u64) -> String {
    if n == 0 {
        "none".to_owned()
    } else {
        n.to_string()
    }
}

/// The oldest lease as the overview says it (the live script says it alike).
fn lease_text(at: Option<Timestamp>, now: Timestamp) -> String {
    match at {
        Some(at) if at >= now => format!("expires {}", text::relative(at, now)),
        Some(at) => format!("expired {}", text::relative(at, now)),
        None => "none".to_owned(),
    }
}
