//! `/list/{state}`: one page of a state, in key order, with a key-prefix search and cursor
//! paging.

use axum::extract::{Path, State as AxState};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::html;
use qupid::{LedgerAdmin, State};

use super::{button, layout, query_pairs, records_table, title_case, Base, Nav};
use crate::dashboard::AppState;
use crate::error::Fail;
use crate::listing;
use crate::text::{self, url_encode};

/// Records per page unless asked.
pub(crate) const DEFAULT_LIMIT: usize = 50;

pub(crate) async fn page<L: LedgerAdmin>(
    AxState(s): AppState<L>,
    Extension(Base(base)): Extension<Base>,
    Path(state): Path<String>,
    uri: Uri,
) -> Response {
    match render(&s, &base, &state, &uri).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

async fn render<L: LedgerAdmin>(
    s: &crate::dashboard::Shared<L>,
    base: &str,
    state: &str,
    uri: &Uri,
) -> Result<Response, Fail> {
    let pairs = query_pairs(uri.query())?;
    let q = listing::query(&pairs, Some(state), DEFAULT_LIMIT, s.options.page_limit)?;
    let page = listing::page(&s.ledger, &q)
        .await
        .map_err(|e| Fail::ledger("listing records", &e))?;
    let stats = s
        .ledger
        .stats()
        .await
        .map_err(|e| Fail::ledger("counting records", &e))?;
    let now = s
        .ledger
        .now()
        .await
        .map_err(|e| Fail::ledger("reading the ledger's clock", &e))?;
    let st = q.state;
    let prefix = q.prefix.as_ref().map_or("", |k| k.as_str());
    let link = |after: Option<&str>| {
        let mut href = format!("{base}/list/{st}?limit={}", q.limit);
        if !prefix.is_empty() {
            href.push_str(&format!("&prefix={}", url_encode(prefix)));
        }
        if let Some(a) = after {
            href.push_str(&format!("&after={}", url_encode(a)));
        }
        href
    };
    let actions = s.options.allow_writes && st == State::Dead;
    let body = html! {
        h1 { (title_case(st)) " " span.muted { "(" (stats.count(st)) ")" } }
        form.search method="get" action={ (base) "/list/" (st) } {
            label { "key prefix " input type="search" name="prefix" value=(prefix) placeholder="orders/"; }
            input type="hidden" name="limit" value=(q.limit);
            " " button type="submit" { "search" }
            @if !prefix.is_empty() { " " a href={ (base) "/list/" (st) } { "clear" } }
        }
        @if actions && stats.dead > 0 {
            p { (button(s, &format!("{base}/retry"), &[("all", "1")], "retry all dead records…", "danger")) }
        }
        @if page.records.is_empty() {
            p.none {
                "No " (st) " records"
                @if !prefix.is_empty() { " whose key starts with “" (text::shown(prefix)) "”" }
                @if q.after.is_some() { " after this point" }
                "."
            }
        } @else {
            (records_table(s, base, st, &page.records, now, actions))
        }
        p.pager {
            @if q.after.is_some() { a href=(link(None)) { "← first page" } " " }
            @if let Some(next) = &page.next { a rel="next" href=(link(Some(next.as_str()))) { "next page →" } }
        }
    };
    Ok(layout(
        s,
        base,
        &format!("{st} records"),
        Nav::List(st),
        false,
        body,
    ))
}
