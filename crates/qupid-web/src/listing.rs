//! One page of a state, optionally only the keys that start with a prefix — read through
//! the ledger's own `list` cursor, so every ledger gets it without a new ledger call.
//!
//! Every ledger lists a state in byte order of its keys (the conformance suite checks it),
//! so the keys that start with a prefix `p` are one run: `p` itself, then the keys after
//! `p` up to the first one that does not start with it. A page reads `p` with `get` (a key
//! is never listed "after" itself) and then lists after `p`, or after the cursor, and stops
//! at the end of the run.

use qupid::ledger::{ListQuery, Page, Record};
use qupid::{Key, LedgerAdmin, State};

use crate::error::Fail;

/// What a page asks for, checked.
#[derive(Debug, Clone)]
pub(crate) struct PageQuery {
    pub(crate) state: State,
    pub(crate) prefix: Option<Key>,
    pub(crate) after: Option<Key>,
    pub(crate) limit: usize,
}

/// Reads the parameters of a list request: `state` (unless in the path), `prefix`, `after`,
/// `limit`. An empty `prefix` is no prefix (an empty search box); an empty or malformed
/// `after` is a bogus cursor (400); a `limit` above `max` is cut to `max`.
pub(crate) fn query(
    pairs: &[(String, String)],
    state: Option<&str>,
    default_limit: usize,
    max: usize,
) -> Result<PageQuery, Fail> {
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let state = state
        .or_else(|| param("state"))
        .ok_or_else(|| Fail::bad_request("expected a state: queued, running, completed or dead"))?;
    let state: State = state
        .parse()
        .map_err(|e: qupid::Error| Fail::bad_request(e.to_string()))?;
    let prefix = match param("prefix") {
        None | Some("") => None,
        Some(p) => Some(
            Key::new(p)
                .map_err(|e| Fail::bad_request(format!("{e}: the prefix cannot match a key")))?,
        ),
    };
    let after = match param("after") {
        None => None,
        Some(a) => Some(Key::new(a).map_err(|e| {
            Fail::bad_request(format!(
                "{e}: `after` must be the `next` cursor of an earlier page"
            ))
        })?),
    };
    let limit = match param("limit") {
        None | Some("") => default_limit,
        Some(l) => match l.parse::<u64>() {
            Ok(0) => return Err(Fail::bad_request("`limit` must be at least 1")),
            Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
            // Digits too many for a u64: a huge limit, cut like any other.
            Err(_) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => usize::MAX,
            Err(_) => {
                return Err(Fail::bad_request(format!(
                    "`limit` must be a number of records, found {l:?}"
                )))
            }
        },
    };
    Ok(PageQuery {
        state,
        prefix,
        after,
        limit: limit.min(max),
    })
}

/// The page `q` asks for.
pub(crate) async fn page<L: LedgerAdmin>(ledger: &L, q: &PageQuery) -> qupid::Result<Page> {
    let Some(prefix) = &q.prefix else {
        return ledger
            .list(&ListQuery {
                state: q.state,
                after: q.after.clone(),
                limit: q.limit,
            })
            .await;
    };
    let p = prefix.as_str();
    let mut out: Vec<Record> = Vec::new();
    let mut after = match &q.after {
        // A cursor inside the run: go on after it.
        Some(a) if a.as_str().starts_with(p) => a.clone(),
        // A cursor past the run: nothing is left.
        Some(a) if a.as_str() > p => {
            return Ok(Page {
                records: Vec::new(),
                next: None,
            })
        }
        // No cursor, or one before the run: from its start, the prefix itself first.
        _ => {
            if let Some(r) = ledger.get(prefix).await? {
                if r.state == q.state {
                    out.push(r);
                }
            }
            prefix.clone()
        }
    };
    // One record more than the page, to know whether there is a next page.
    let want = q.limit.saturating_add(1);
    'pages: loop {
        let page = ledger
            .list(&ListQuery {
                state: q.state,
                after: Some(after.clone()),
                limit: want - out.len(),
            })
            .await?;
        for r in page.records {
            if !r.key.as_str().starts_with(p) {
                break 'pages;
            }
            out.push(r);
            if out.len() == want {
                break 'pages;
            }
        }
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    let next = if out.len() > q.limit {
        out.truncate(q.limit);
        out.last().map(|r| r.key.clone())
    } else {
        None
    };
    Ok(Page { records: out, next })
}
