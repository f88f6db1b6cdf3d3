//! What the overview and `/api/stats` show, read from the ledger once for every request that
//! asks while a read is in flight.

use std::sync::Arc;
use std::time::Instant;

use qupid::clock::Timestamp;
use qupid::ledger::{ListQuery, Record, Stats};
use qupid::{LedgerAdmin, State};

/// How many records one `list` call fetches when a state is read through.
const SCAN_PAGE: usize = 1_000;

/// Counts, the ledger's clock, and the earliest lease expiry among Queued and Running
/// records (as `qupid stats` reads them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub(crate) stats: Stats,
    pub(crate) now: Timestamp,
    pub(crate) oldest_lease: Option<Timestamp>,
}

/// One read at a time: a request that arrives while a read is in flight waits for it and
/// takes its result, since it began after the request did (so a page never shows counts
/// older than itself, and a hundred open dashboards cost one read).
#[derive(Debug, Default)]
pub(crate) struct SnapshotCache {
    last: tokio::sync::Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

impl SnapshotCache {
    pub(crate) async fn get<L: LedgerAdmin>(&self, ledger: &L) -> qupid::Result<Arc<Snapshot>> {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((started, snapshot)) = last.as_ref() {
            if *started >= asked {
                return Ok(snapshot.clone());
            }
        }
        let started = Instant::now();
        let snapshot = Arc::new(read(ledger).await?);
        *last = Some((started, snapshot.clone()));
        Ok(snapshot)
    }
}

async fn read<L: LedgerAdmin>(ledger: &L) -> qupid::Result<Snapshot> {
    let stats = ledger.stats().await?;
    let mut oldest_lease: Option<Timestamp> = None;
    for state in [State::Queued, State::Running] {
        if stats.count(state) == 0 {
            continue;
        }
        scan(ledger, state, usize::MAX, |r| {
            if let Some(at) = r.expires_at {
                oldest_lease = Some(oldest_lease.map_or(at, |o| o.min(at)));
            }
        })
        .await?;
    }
    let now = ledger.now().await?;
    Ok(Snapshot {
        stats,
        now,
        oldest_lease,
    })
}

/// Calls `f` on the records in `state`, in key order, up to `limit` of them; answers how
/// many it read and whether it stopped before the end.
pub(crate) async fn scan<L: LedgerAdmin>(
    ledger: &L,
    state: State,
    limit: usize,
    mut f: impl FnMut(&Record),
) -> qupid::Result<(usize, bool)> {
    let mut query = ListQuery::new(state).limit(SCAN_PAGE.min(limit.max(1)));
    let mut read = 0;
    loop {
        let page = ledger.list(&query).await?;
        for r in &page.records {
            if read == limit {
                return Ok((read, true));
            }
            f(r);
            read += 1;
        }
        match page.next {
            Some(next) if read < limit => query.after = Some(next),
            Some(_) => return Ok((read, true)),
            None => return Ok((read, false)),
        }
    }
}

/// The most recent dead records (by finish time), at most `n`, among the first `limit` in
/// key order; and whether there were more than `limit` to look at.
pub(crate) async fn recent_dead<L: LedgerAdmin>(
    ledger: &L,
    n: usize,
    limit: usize,
) -> qupid::Result<(Vec<Record>, bool)> {
    let mut recent: Vec<Record> = Vec::new();
    let (_, truncated) = scan(ledger, State::Dead, limit, |r| {
        recent.push(r.clone());
        if recent.len() > n * 4 {
            keep_newest(&mut recent, n);
        }
    })
    .await?;
    keep_newest(&mut recent, n);
    Ok((recent, truncated))
}

fn keep_newest(records: &mut Vec<Record>, n: usize) {
    records.sort_by(|a, b| {
        b.finished_at
            .cmp(&a.finished_at)
            .then_with(|| a.key.cmp(&b.key))
    });
    records.truncate(n);
}
