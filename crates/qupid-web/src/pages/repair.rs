//! The repairs: retry dead records, remove records (a leased one only after a second
//! confirmation), purge finished records by age after a dry-run preview.
//!
//! Every write is a POST that carries the CSRF token and is answered first with a page that
//! says what will happen and asks to confirm (`confirm=1`; a forced remove asks twice,
//! `confirm=2`). Only the confirmed POST changes the ledger.

use std::time::Duration;

use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup};
use qupid::clock::Timestamp;
use qupid::ledger::{ListQuery, Removed, Retried};
use qupid::{Keep, Key, LedgerAdmin, Retention, State};

use super::{button, csrf_field, key_param, layout, param, query_pairs, record_href, Base, Nav};
use crate::auth::{check_write, ByBearer};
use crate::dashboard::{AppState, Shared};
use crate::error::Fail;
use crate::snapshot::scan;
use crate::text::{self, format_duration, parse_duration};

/// How many dead records one `retry` call takes when retrying all of them.
const RETRY_BATCH: usize = 1_000;

/// The checks of every write form: a body that reads as a form, writes allowed, the CSRF
/// token.
fn form<L>(
    s: &Shared<L>,
    headers: &HeaderMap,
    bearer: Option<Extension<ByBearer>>,
    body: &str,
) -> Result<Vec<(String, String)>, Fail> {
    let pairs = text::parse_pairs(body).map_err(Fail::bad_request)?;
    check_write(s, headers, bearer.is_some(), param(&pairs, "csrf"))?;
    Ok(pairs)
}

fn page<L>(s: &Shared<L>, base: &str, title: &str, status: StatusCode, body: Markup) -> Response {
    let mut r = layout(s, base, title, Nav::None, false, body);
    *r.status_mut() = status;
    r
}

/// A page that asks to confirm: what will happen, a button that posts `fields` (with
/// `confirm`) to `action`, and a way back.
struct Confirm<'a> {
    action: &'a str,
    title: &'a str,
    explain: Markup,
    fields: &'a [(&'a str, &'a str)],
    label: &'a str,
    back: &'a str,
}

impl Confirm<'_> {
    fn page<L>(self, s: &Shared<L>, base: &str) -> Response {
        let body = html! {
            h1 { (self.title) }
            (self.explain)
            form.confirm method="post" action={ (base) (self.action) } {
                (csrf_field(s))
                @for (name, value) in self.fields {
                    input type="hidden" name=(name) value=(value);
                }
                button type="submit" class="danger" { (self.label) }
                " "
                a href=(self.back) { "cancel" }
            }
        };
        page(s, base, self.title, StatusCode::OK, body)
    }
}

/// `POST /remove`: `key`, optional `force=1`, `confirm` (1, and 2 for a forced remove).
pub(crate) async fn remove<L: LedgerAdmin>(
    AxState(s): AppState<L>,
    Extension(Base(base)): Extension<Base>,
    bearer: Option<Extension<ByBearer>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let run = async {
        let pairs = form(&s, &headers, bearer, &body)?;
        let key = key_param(&pairs)?;
        let force = param(&pairs, "force") == Some("1");
        let confirm = param(&pairs, "confirm").unwrap_or_default();
        let k = key.as_str();
        let back = record_href(&base, k);
        let shown = text::shown(k);
        if !force && confirm != "1" {
            return Ok(Confirm {
 action: "/remove",
 title: "Remove this record?",
 explain: html! { p { "Removes the record of " code { (shown) } ": the key is processed again at its next offer." } },
 fields: &[("key", k), ("confirm", "1")],
 label: "remove",
 back: &back,
 }
 .page(&s, &base));
        }
        if force && confirm != "1" && confirm != "2" {
            let state = s
                .ledger
                .get(&key)
                .await
                .map_err(|e| Fail::ledger("reading the record", &e))?
                .map_or_else(
                    || "absent".to_owned(),
                    |r| format!("{} under token {}", r.state, r.token),
                );
            return Ok(Confirm {
 action: "/remove",
 title: "Force-remove this record? (1 of 2)",
 explain: html! {
                    p { "The key " code { (shown) } " is " strong { (state) } "." }
                    p { "A forced remove deletes the record whatever its state. A worker that holds its lease is fenced out: its renewals and completion are refused. What it is doing right now (a save in progress) is not stopped, and the next offer of the key starts it again." }
                },
 fields: &[("key", k), ("force", "1"), ("confirm", "1")],
 label: "continue…",
 back: &back,
 }
 .page(&s, &base));
        }
        if force && confirm == "1" {
            return Ok(Confirm {
 action: "/remove",
 title: "Force-remove this record? (2 of 2)",
 explain: html! { p { "Second confirmation: remove " code { (shown) } " now, fencing out any worker that holds it." } },
 fields: &[("key", k), ("force", "1"), ("confirm", "2")],
 label: "force remove now",
 back: &back,
 }
 .page(&s, &base));
        }
        let outcome = s
            .ledger
            .remove(std::slice::from_ref(&key), force)
            .await
            .map_err(|e| Fail::ledger("removing the record", &e))?;
        match outcome.first().copied() {
            Some(Removed::Removed) => Ok(page(
                &s,
                &base,
                "removed",
                StatusCode::OK,
                html! {
                    h1 { "Removed" }
                    p { "The record of " code { (shown) } " is gone: the key is processed again at its next offer." }
                    p { a href=(super::home(&base)) { "← overview" } }
                },
            )),
            Some(Removed::Leased(state)) => Ok(page(
                &s,
                &base,
                "refused",
                StatusCode::CONFLICT,
                html! {
                    h1 { "Refused" }
                    p { "The key " code { (shown) } " is " (state) ": a worker may be processing it. Nothing was changed." }
                    (button(&s, &format!("{base}/remove"), &[("key", k), ("force", "1")], "force remove…", "danger"))
                },
            )),
            Some(Removed::NotFound) | None => Err(Fail::not_found(format!(
                "the ledger has no record of the key {k:?}"
            ))),
        }
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /retry`: `key` (or `all=1` for every dead record), `confirm=1`.
pub(crate) async fn retry<L: LedgerAdmin>(
    AxState(s): AppState<L>,
    Extension(Base(base)): Extension<Base>,
    bearer: Option<Extension<ByBearer>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let run = async {
        let pairs = form(&s, &headers, bearer, &body)?;
        let confirmed = param(&pairs, "confirm") == Some("1");
        if param(&pairs, "all") == Some("1") {
            if !confirmed {
                let stats = s
                    .ledger
                    .stats()
                    .await
                    .map_err(|e| Fail::ledger("counting records", &e))?;
                return Ok(Confirm {
 action: "/retry",
 title: "Retry every dead record?",
 explain: html! { p { "Removes all " strong { (stats.dead) } " dead records: each key is processed again at its next offer. A poison record goes dead again after its attempts." } },
 fields: &[("all", "1"), ("confirm", "1")],
 label: "retry all dead records",
 back: &format!("{base}/list/dead"),
 }
 .page(&s, &base));
            }
            let n = retry_all(&s.ledger).await?;
            return Ok(page(
                &s,
                &base,
                "retried",
                StatusCode::OK,
                html! {
                    h1 { "Retried" }
                    p { "Retried " (n) " dead records: their keys are processed again at their next offer." }
                    p { a href=(super::home(&base)) { "← overview" } }
                },
            ));
        }
        let key = key_param(&pairs)?;
        let k = key.as_str();
        let shown = text::shown(k);
        if !confirmed {
            return Ok(Confirm {
 action: "/retry",
 title: "Retry this dead record?",
 explain: html! { p { "Removes the dead record of " code { (shown) } ": the key is processed again at its next offer." } },
 fields: &[("key", k), ("confirm", "1")],
 label: "retry",
 back: &record_href(&base, k),
 }
 .page(&s, &base));
        }
        let outcome = s
            .ledger
            .retry(std::slice::from_ref(&key))
            .await
            .map_err(|e| Fail::ledger("retrying the record", &e))?;
        match outcome.first().copied() {
            Some(Retried::Retried) => Ok(page(
                &s,
                &base,
                "retried",
                StatusCode::OK,
                html! {
                    h1 { "Retried" }
                    p { "The dead record of " code { (shown) } " is gone: the key is processed again at its next offer." }
                    p { a href={ (base) "/list/dead" } { "← dead records" } }
                },
            )),
            Some(Retried::NotDead(state)) => Ok(page(
                &s,
                &base,
                "refused",
                StatusCode::CONFLICT,
                html! {
                    h1 { "Refused" }
                    p { "The key " code { (shown) } " is " (state) ", not dead: nothing was changed." }
                },
            )),
            Some(Retried::NotFound) | None => Err(Fail::not_found(format!(
                "the ledger has no record of the key {k:?}"
            ))),
        }
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Retries every dead record, a batch at a time; answers how many were retried.
pub(crate) async fn retry_all<L: LedgerAdmin>(ledger: &L) -> Result<u64, Fail> {
    let mut n = 0;
    let mut query = ListQuery::new(State::Dead).limit(RETRY_BATCH);
    loop {
        let page = ledger
            .list(&query)
            .await
            .map_err(|e| Fail::ledger("listing dead records", &e))?;
        let keys: Vec<Key> = page.records.into_iter().map(|r| r.key).collect();
        if keys.is_empty() {
            return Ok(n);
        }
        let done = ledger
            .retry(&keys)
            .await
            .map_err(|e| Fail::ledger("retrying dead records", &e))?;
        n += done.iter().filter(|r| **r == Retried::Retried).count() as u64;
        // Keys retried are gone; a key that changed meanwhile is passed by the cursor.
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(n),
        }
    }
}

/// What a purge is asked to do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PurgeAsk {
    pub(crate) completed: bool,
    pub(crate) dead: bool,
    pub(crate) older_than: Duration,
}

impl PurgeAsk {
    fn from_pairs(pairs: &[(String, String)]) -> Result<Option<PurgeAsk>, Fail> {
        let Some(age) = param(pairs, "older_than") else {
            return Ok(None);
        };
        let older_than = parse_duration(age).map_err(Fail::bad_request)?;
        let ask = PurgeAsk {
            completed: param(pairs, "completed") == Some("1"),
            dead: param(pairs, "dead") == Some("1"),
            older_than,
        };
        ask.check()?;
        Ok(Some(ask))
    }

    pub(crate) fn check(&self) -> Result<(), Fail> {
        if !self.completed && !self.dead {
            return Err(Fail::bad_request(
                "choose what to purge: completed, dead or both",
            ));
        }
        Ok(())
    }

    pub(crate) fn retention(&self) -> Retention {
        let keep = |chosen: bool| {
            if chosen {
                Keep::younger_than(self.older_than)
            } else {
                Keep::FOREVER
            }
        };
        Retention {
            completed: keep(self.completed),
            dead: keep(self.dead),
        }
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("older_than", format_duration(self.older_than))];
        if self.completed {
            f.push(("completed", "1".to_owned()));
        }
        if self.dead {
            f.push(("dead", "1".to_owned()));
        }
        f
    }
}

/// The records a purge would remove now, per chosen state (`None` if not chosen): those
/// that finished `older_than` or more ago by the ledger's clock, as `qupid purge --dry-run`
/// counts them. Reads every record of the chosen states.
pub(crate) async fn dry_run<L: LedgerAdmin>(
    ledger: &L,
    ask: PurgeAsk,
) -> Result<(Option<u64>, Option<u64>, Timestamp), Fail> {
    let now = ledger
        .now()
        .await
        .map_err(|e| Fail::ledger("reading the ledger's clock", &e))?;
    let mut counts = [None, None];
    for (i, (chosen, state)) in [(ask.completed, State::Completed), (ask.dead, State::Dead)]
        .into_iter()
        .enumerate()
    {
        if !chosen {
            continue;
        }
        let mut n = 0;
        scan(ledger, state, usize::MAX, |r| {
            if r.finished_at
                .is_some_and(|at| now.since(at) >= ask.older_than)
            {
                n += 1;
            }
        })
        .await
        .map_err(|e| Fail::ledger("reading finished records", &e))?;
        counts[i] = Some(n);
    }
    Ok((counts[0], counts[1], now))
}

fn purge_page<L>(
    s: &Shared<L>,
    base: &str,
    ask: Option<PurgeAsk>,
    preview: Option<(Option<u64>, Option<u64>, Timestamp)>,
) -> Response {
    let checked = |want: bool| ask.is_none_or(|_| want);
    let age = ask.map_or_else(|| "7d".to_owned(), |a| format_duration(a.older_than));
    let body = html! {
        h1 { "Purge finished records" }
        p { "Deletes completed and/or dead records that finished some time ago, by the ledger's clock. Purged keys are processed again if they are offered again." }
        form.search method="get" action={ (base) "/purge" } {
            label { input type="checkbox" name="completed" value="1" checked[checked(ask.is_some_and(|a| a.completed))]; " completed" }
            " "
            label { input type="checkbox" name="dead" value="1" checked[checked(ask.is_some_and(|a| a.dead))]; " dead" }
            " "
            label { "finished " input type="text" name="older_than" value=(age) size="6"; " or more ago" }
            " "
            button type="submit" { "preview" }
        }
        @if let (Some(ask), Some((completed, dead, now))) = (ask, preview) {
            section.preview {
                h2 { "Dry run" }
                p {
                    "Would purge "
                    @if let Some(n) = completed { strong id="would-completed" { (n) } " completed" }
                    @if completed.is_some() && dead.is_some() { " and " }
                    @if let Some(n) = dead { strong id="would-dead" { (n) } " dead" }
                    " records that finished " (format_duration(ask.older_than)) " or more ago (at or before "
                    (text::utc(Timestamp::from_millis(now.as_millis().saturating_sub(u64::try_from(ask.older_than.as_millis()).unwrap_or(u64::MAX)))))
                    "). Nothing was changed."
                }
                @if s.options.allow_writes {
                    form.confirm method="post" action={ (base) "/purge" } {
                        (csrf_field(s))
                        @for (name, value) in ask.fields() {
                            input type="hidden" name=(name) value=(value);
                        }
                        input type="hidden" name="confirm" value="1";
                        button type="submit" class="danger" { "purge now" }
                    }
                } @else {
                    p.hint { "This dashboard is read-only." }
                }
            }
        }
    };
    layout(s, base, "purge", Nav::Purge, false, body)
}

/// `GET /purge`: the form; with `older_than` (and `completed`, `dead`), a dry-run preview.
pub(crate) async fn purge_form<L: LedgerAdmin>(
    AxState(s): AppState<L>,
    Extension(Base(base)): Extension<Base>,
    uri: Uri,
) -> Response {
    let run = async {
        let pairs = query_pairs(uri.query())?;
        let ask = PurgeAsk::from_pairs(&pairs)?;
        let preview = match ask {
            Some(a) => Some(dry_run(&s.ledger, a).await?),
            None => None,
        };
        Ok::<_, Fail>(purge_page(&s, &base, ask, preview))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /purge`: `completed=1` and/or `dead=1`, `older_than`; without `confirm=1`, the
/// dry-run preview.
pub(crate) async fn purge<L: LedgerAdmin>(
    AxState(s): AppState<L>,
    Extension(Base(base)): Extension<Base>,
    bearer: Option<Extension<ByBearer>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let run = async {
        let pairs = form(&s, &headers, bearer, &body)?;
        let ask = PurgeAsk::from_pairs(&pairs)?
            .ok_or_else(|| Fail::bad_request("expected `older_than`, like 7d"))?;
        if param(&pairs, "confirm") != Some("1") {
            let preview = dry_run(&s.ledger, ask).await?;
            return Ok(purge_page(&s, &base, Some(ask), Some(preview)));
        }
        let purged = s
            .ledger
            .purge(&ask.retention())
            .await
            .map_err(|e| Fail::ledger("purging records", &e))?;
        Ok::<_, Fail>(page(
            &s,
            &base,
            "purged",
            StatusCode::OK,
            html! {
                h1 { "Purged" }
                p {
                    "Purged "
                    @if ask.completed { strong id="purged-completed" { (purged.completed) } " completed" }
                    @if ask.completed && ask.dead { " and " }
                    @if ask.dead { strong id="purged-dead" { (purged.dead) } " dead" }
                    " records that finished " (format_duration(ask.older_than)) " or more ago."
                }
                p { a href=(super::home(&base)) { "← overview" } }
            },
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
