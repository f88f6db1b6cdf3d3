//! `/show?key=KEY`: everything the ledger holds about one key, and what can be done to it.

use axum::extract::State as AxState;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::html;
use qupid::{LedgerAdmin, State};

use super::{button, key_param, layout, query_pairs, when, Base, Nav};
use crate::dashboard::{AppState, Shared};
use crate::error::Fail;
use crate::text;

pub(crate) async fn page<L: LedgerAdmin>(
    AxState(s): AppState<L>,
    Extension(Base(base)): Extension<Base>,
    uri: Uri,
) -> Response {
    match render(&s, &base, &uri).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

async fn render<L: LedgerAdmin>(s: &Shared<L>, base: &str, uri: &Uri) -> Result<Response, Fail> {
    let pairs = query_pairs(uri.query())?;
    let key = key_param(&pairs)?;
    let record = s
        .ledger
        .get(&key)
        .await
        .map_err(|e| Fail::ledger("reading the record", &e))?
        .ok_or_else(|| {
            Fail::not_found(format!(
                "the ledger has no record of the key {:?}",
                key.as_str()
            ))
        })?;
    let now = s
        .ledger
        .now()
        .await
        .map_err(|e| Fail::ledger("reading the ledger's clock", &e))?;
    let r = &record;
    let k = r.key.as_str();
    let opt = |v: Option<&str>| match v {
        Some(v) => text::shown(v),
        None => html! { span.none { "-" } },
    };
    let body = html! {
        h1.key { (text::shown(k)) }
        dl.record {
            dt { "state" } dd { span class={ "state " (r.state) } { (r.state) } }
            dt { "version" } dd { (opt(r.version.as_ref().map(|v| v.as_str()))) }
            dt { "newer version" } dd { (opt(r.newer_version.as_ref().map(|v| v.as_str()))) }
            dt { "attempts" } dd { (r.attempts) }
            dt { "abandoned" } dd { (r.abandoned) }
            dt { "token" } dd { (r.token.get()) }
            dt { "lease expires" } dd {
                (when(r.expires_at, now))
                @if r.expires_at.is_some_and(|at| at < now) { " " span.warn { "(expired: the next offer takes the key over)" } }
            }
            dt { "finished" } dd { (when(r.finished_at, now)) }
            dt { "last error" } dd { pre.error { (opt(r.last_error.as_deref())) } }
            dt { "superseded" } dd { @if r.superseded { "yes: a newer version was offered while it ran" } @else { "no" } }
            dt { "key length" } dd { (k.len()) " bytes" }
        }
        @if s.options.allow_writes {
            section.actions {
                h2 { "Repair" }
                @match r.state {
                    State::Dead => {
                        (button(s, &format!("{base}/retry"), &[("key", k)], "retry…", ""))
                        " "
                        (button(s, &format!("{base}/remove"), &[("key", k)], "remove…", "danger"))
                    }
                    State::Completed => {
                        (button(s, &format!("{base}/remove"), &[("key", k)], "remove…", "danger"))
                    }
                    State::Queued | State::Running => {
                        p { "The key is " (r.state) ": a worker may hold its lease. Removing it fences that worker out." }
                        (button(s, &format!("{base}/remove"), &[("key", k), ("force", "1")], "force remove…", "danger"))
                    }
                }
            }
        }
        p { a href={ (base) "/list/" (r.state) } { "← " (r.state) " records" } }
    };
    let title = format!("record {}", text::plain(k, 60));
    Ok(layout(s, base, &title, Nav::None, false, body))
}
