//! The JSON API under `/api`: the CLI's `--json` shapes (`stats`, `list`, `show`, `remove`,
//! `retry`, `purge`), the throughput samples, and the session (the CSRF token for scripts).

use std::collections::HashSet;

use axum::extract::State as AxState;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use qupid::{Key, LedgerAdmin};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{check_write, ByBearer};
use crate::dashboard::AppState;
use crate::error::{ApiFail, Fail};
use crate::json::{ListJson, OutcomeJson, PurgeJson, RecordJson, RemoveJson, RetryJson, StatsJson};
use crate::pages::list::DEFAULT_LIMIT;
use crate::pages::repair::{dry_run, retry_all, PurgeAsk};
use crate::pages::{key_param, query_pairs, secure_headers};
use crate::{listing, sampler};

/// The most keys one `remove` or `retry` request may name.
pub(crate) const MAX_KEYS: usize = 1_000;

fn ok<T: serde::Serialize>(value: &T) -> Response {
    let mut r = Json(value).into_response();
    secure_headers(r.headers_mut(), None);
    r
}

fn answer(result: Result<Response, Fail>) -> Response {
    result.unwrap_or_else(|f| ApiFail(f).into_response())
}

/// `GET /api/stats`: as `qupid --json stats`.
pub(crate) async fn stats<L: LedgerAdmin>(AxState(s): AppState<L>) -> Response {
    sampler::start(&s);
    answer(
        async {
            let snap = s
                .snapshot
                .get(&s.ledger)
                .await
                .map_err(|e| Fail::ledger("reading the ledger's counts", &e))?;
            Ok(ok(&StatsJson {
                ledger: &s.options.ledger_name,
                namespace: s.options.namespace.as_deref(),
                now_ms: snap.now.as_millis(),
                counts: snap.stats.into(),
                total: snap.stats.total(),
                expired_leases: snap.stats.expired,
                oldest_lease_expires_at_ms: snap.oldest_lease.map(|t| t.as_millis()),
            }))
        }
        .await,
    )
}

/// `GET /api/list?state=S[&prefix=P][&after=CURSOR][&limit=N]`: as `qupid --json list`.
pub(crate) async fn list<L: LedgerAdmin>(AxState(s): AppState<L>, uri: Uri) -> Response {
    answer(
        async {
            let pairs = query_pairs(uri.query())?;
            let q = listing::query(&pairs, None, DEFAULT_LIMIT, s.options.page_limit)?;
            let page = listing::page(&s.ledger, &q)
                .await
                .map_err(|e| Fail::ledger("listing records", &e))?;
            Ok(ok(&ListJson {
                state: q.state.as_str(),
                records: page.records.iter().map(RecordJson::from).collect(),
                next: page.next.as_ref().map(Key::as_str),
            }))
        }
        .await,
    )
}

/// `GET /api/show?key=K`: as `qupid --json show`; 404 for a key with no record.
pub(crate) async fn show<L: LedgerAdmin>(AxState(s): AppState<L>, uri: Uri) -> Response {
    answer(
        async {
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
            Ok(ok(&RecordJson::from(&record)))
        }
        .await,
    )
}

/// `GET /api/throughput`: the samples kept and the rates between them.
pub(crate) async fn throughput<L: LedgerAdmin>(AxState(s): AppState<L>) -> Response {
    sampler::start(&s);
    let samples = sampler::samples(&s);
    let rates = sampler::rates(&samples);
    ok(&json!({
        "interval_ms": u64::try_from(s.options.sample_every.as_millis()).unwrap_or(u64::MAX),
        "samples": samples,
        "rates": rates,
    }))
}

/// `GET /api/session`: whether writes are allowed, and the CSRF token a script sends in
/// the `x-qupid-csrf` header (a page of another site cannot read it).
pub(crate) async fn session<L: LedgerAdmin>(AxState(s): AppState<L>) -> Response {
    ok(&json!({
        "allow_writes": s.options.allow_writes,
        "csrf": s.secrets.csrf,
    }))
}

/// Reads a JSON body, naming what is wrong with it.
fn body<T: for<'de> Deserialize<'de>>(body: &str) -> Result<T, Fail> {
    serde_json::from_str(body).map_err(|e| Fail::bad_request(format!("a bad JSON body: {e}")))
}

/// The keys of a request, checked, each once, in the order first given.
fn keys(given: &[String]) -> Result<Vec<Key>, Fail> {
    if given.is_empty() {
        return Err(Fail::bad_request("expected at least one key"));
    }
    if given.len() > MAX_KEYS {
        return Err(Fail::bad_request(format!(
            "at most {MAX_KEYS} keys per request, found {}",
            given.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut keys = Vec::with_capacity(given.len());
    for k in given {
        if seen.insert(k.as_str()) {
            keys.push(Key::new(k).map_err(|e| Fail::bad_request(format!("{e}: not a key")))?);
        }
    }
    Ok(keys)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveBody {
    keys: Vec<String>,
    #[serde(default)]
    force: bool,
}

/// `POST /api/remove` `{"keys": [...], "force": false}`: as `qupid --json remove --yes`.
pub(crate) async fn remove<L: LedgerAdmin>(
    AxState(s): AppState<L>,
    bearer: Option<Extension<ByBearer>>,
    headers: HeaderMap,
    text: String,
) -> Response {
    answer(
        async {
            check_write(&s, &headers, bearer.is_some(), None)?;
            let b: RemoveBody = body(&text)?;
            let keys = keys(&b.keys)?;
            let out = s
                .ledger
                .remove(&keys, b.force)
                .await
                .map_err(|e| Fail::ledger("removing records", &e))?;
            let results: Vec<OutcomeJson<'_>> = keys
                .iter()
                .zip(out)
                .map(|(k, r)| OutcomeJson::removed(k, r))
                .collect();
            let removed = results.iter().filter(|r| r.outcome == "removed").count() as u64;
            Ok(ok(&RemoveJson {
                force: b.force,
                removed,
                results,
            }))
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    all_dead: bool,
}

/// `POST /api/retry` `{"keys": [...]}` or `{"all_dead": true}`: as `qupid --json retry
/// --yes`. With `all_dead`, `results` is empty and `retried` counts the records retried.
pub(crate) async fn retry<L: LedgerAdmin>(
    AxState(s): AppState<L>,
    bearer: Option<Extension<ByBearer>>,
    headers: HeaderMap,
    text: String,
) -> Response {
    answer(
        async {
            check_write(&s, &headers, bearer.is_some(), None)?;
            let b: RetryBody = body(&text)?;
            if b.all_dead {
                if !b.keys.is_empty() {
                    return Err(Fail::bad_request("give keys or all_dead, not both"));
                }
                let retried = retry_all(&s.ledger).await?;
                return Ok(ok(&RetryJson {
                    all_dead: true,
                    retried,
                    results: Vec::new(),
                }));
            }
            let keys = keys(&b.keys)?;
            let out = s
                .ledger
                .retry(&keys)
                .await
                .map_err(|e| Fail::ledger("retrying records", &e))?;
            let results: Vec<OutcomeJson<'_>> = keys
                .iter()
                .zip(out)
                .map(|(k, r)| OutcomeJson::retried(k, r))
                .collect();
            let retried = results.iter().filter(|r| r.outcome == "retried").count() as u64;
            Ok(ok(&RetryJson {
                all_dead: false,
                retried,
                results,
            }))
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    #[serde(default)]
    completed: bool,
    #[serde(default)]
    dead: bool,
    older_than_secs: u64,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/purge` `{"completed": true, "dead": false, "older_than_secs": 604800,
/// "dry_run": true}`: as `qupid --json purge`.
pub(crate) async fn purge<L: LedgerAdmin>(
    AxState(s): AppState<L>,
    bearer: Option<Extension<ByBearer>>,
    headers: HeaderMap,
    text: String,
) -> Response {
    answer(
        async {
            check_write(&s, &headers, bearer.is_some(), None)?;
            let b: PurgeBody = body(&text)?;
            let ask = PurgeAsk {
                completed: b.completed,
                dead: b.dead,
                older_than: std::time::Duration::from_secs(b.older_than_secs),
            };
            ask.check()?;
            let (completed, dead, now) = if b.dry_run {
                dry_run(&s.ledger, ask).await?
            } else {
                let now = s
                    .ledger
                    .now()
                    .await
                    .map_err(|e| Fail::ledger("reading the ledger's clock", &e))?;
                let purged = s
                    .ledger
                    .purge(&ask.retention())
                    .await
                    .map_err(|e| Fail::ledger("purging records", &e))?;
                (
                    b.completed.then_some(purged.completed),
                    b.dead.then_some(purged.dead),
                    now,
                )
            };
            Ok(ok(&PurgeJson {
                dry_run: b.dry_run,
                older_than_secs: b.older_than_secs,
                now_ms: now.as_millis(),
                completed,
                dead,
            }))
        }
        .await,
    )
}
