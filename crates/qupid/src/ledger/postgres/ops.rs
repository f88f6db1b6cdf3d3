//! The [`Ledger`] implementation: batches split into statements, statements run with
//! retries on conflicts, answers decoded.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::decode::{
    self, ceil_ms, count_cap, floor_ms, state_code, token_param, unreadable_key, window_ms,
};
use super::errors::{is_retryable, map_pg, map_pool};
use super::wire::{
    Answer, ClaimDecision, ClaimParams, FailParams, KeyDecision, KeyParams, OfferDecision,
    OfferParams, Params,
};
use super::PostgresLedger;
use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind, Result};
use crate::key::{Key, Offer};
use crate::ledger::types::*;
use crate::ledger::{Ledger, LedgerAdmin};
use crate::policy::{Keep, NewerVersions, Policy, Retention};

/// Times a statement is run again after a deadlock or serialization failure.
const CONFLICT_RETRIES: u32 = 5;
/// Statements an item may need before its row stops changing under it. Each retry means
/// another process wrote the row in the instant between a snapshot and a write; a dozen in
/// a row means something is writing it in a loop.
const MAX_DECISIONS: u32 = 12;
/// Records deleted per purge statement.
const PURGE_CHUNK: i64 = 5_000;

fn keys_of<I>(batch: &[&I], key: impl Fn(&I) -> &str) -> Vec<Vec<u8>> {
    batch.iter().map(|i| key(i).as_bytes().to_vec()).collect()
}

fn tokens_of(batch: &[&Claim]) -> Vec<i64> {
    batch.iter().map(|c| token_param(c.token)).collect()
}

/// Splits a batch into rounds in which each key appears once: the n-th copy of a key goes in
/// round n, so copies are applied one after another, as the memory ledger does. Each round
/// is sorted by key, so concurrent statements lock rows in the same order.
fn rounds<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<Vec<usize>> {
    let keys: Vec<&str> = keys.collect();
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let n = seen.entry(k).or_insert(0);
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(i);
        *n += 1;
    }
    for round in &mut rounds {
        round.sort_by_key(|&i| keys[i]);
    }
    rounds
}

impl PostgresLedger {
    /// `Ok` unless the ledger was opened read-only; `doing` names the refused call.
    fn writable(&self, doing: &str) -> Result<()> {
        if self.inner.read_only {
            return Err(crate::ledger::read_only_error(
                &format!(
                    "postgres namespace {:?} at {}",
                    self.inner.namespace, self.inner.url
                ),
                doing,
            ));
        }
        Ok(())
    }

    fn ns(&self) -> &str {
        &self.inner.namespace
    }

    /// Runs one statement, again after a deadlock or serialization failure (which roll the
    /// statement back, so running it again is safe).
    async fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.query_with(what, sql, params, false).await
    }

    /// As [`query`](Self::query); with `no_bitmaps`, in a transaction that keeps the planner
    /// off bitmap scans (`SET LOCAL enable_bitmapscan = off`). The purge statements read the
    /// oldest rows of the purge index up to a limit; before the table's first `ANALYZE` (a
    /// table filled in one go, which autovacuum has not reached yet) the planner, guessing
    /// few matching rows, read every finished row with a bitmap scan and sorted them, about
    /// 220 ms a chunk at a million rows, against 8 ms walking the index in order.
    async fn query_with(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        no_bitmaps: bool,
    ) -> Result<Vec<Row>> {
        let (url, ns) = (&self.inner.url, self.ns());
        let mut conflicts = 0;
        loop {
            let mut client = self
                .inner
                .pool
                .get()
                .await
                .map_err(|e| map_pool(e, what, url, ns))?;
            let result = if no_bitmaps {
                async {
                    let tx = client.transaction().await?;
                    tx.batch_execute("SET LOCAL enable_bitmapscan = off")
                        .await?;
                    let statement = tx.prepare_cached(sql).await?;
                    let rows = tx.query(&statement, params).await?;
                    tx.commit().await?;
                    Ok(rows)
                }
                .await
            } else {
                match client.prepare_cached(sql).await {
                    Ok(statement) => client.query(&statement, params).await,
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(rows) => return Ok(rows),
                Err(e) if is_retryable(&e) && conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    drop(client);
                    let pause = fastrand::u64(1..=10 * u64::from(conflicts));
                    tracing::debug!(what, conflicts, error = %e, "postgres conflict, running the statement again");
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(map_pg(e, what, url, ns)),
            }
        }
    }

    /// Runs a transition over `items`: split into rounds, each round one statement, and the
    /// items `decide` cannot answer yet (their row changed under the statement) in fresh
    /// statements until every item has its answer.
    async fn transition<I, T>(
        &self,
        what: &str,
        sql: &str,
        items: &[I],
        key: impl Fn(&I) -> &str,
        params: impl Fn(&[&I]) -> Params,
        decide: impl Fn(&Answer, &I) -> Result<Option<T>>,
    ) -> Result<Vec<T>> {
        let mut out: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
        for round in rounds(items.iter().map(&key)) {
            let mut pending = round;
            let mut tries = 0;
            while !pending.is_empty() {
                tries += 1;
                if tries > MAX_DECISIONS {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "postgres namespace {:?}: {} keys kept changing under {what} \
                             ({MAX_DECISIONS} tries); try again",
                            self.ns(),
                            pending.len()
                        ),
                    ));
                }
                let batch: Vec<&I> = pending.iter().map(|&i| &items[i]).collect();
                let owned = params(&batch);
                let refs: Vec<&(dyn ToSql + Sync)> =
                    owned.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
                let rows = self.query(what, sql, &refs).await?;
                if rows.len() != batch.len() {
                    return Err(decode::corrupt(
                        self.ns(),
                        format!(
                            "{what} of {} keys answered {} rows (is the meta row missing?)",
                            batch.len(),
                            rows.len()
                        ),
                    ));
                }
                let mut again = Vec::new();
                for row in &rows {
                    let answer = Answer::read(row, self.ns())?;
                    let Some(&index) = answer.ord.checked_sub(1).and_then(|o| pending.get(o))
                    else {
                        return Err(answer.unexpected(self.ns()));
                    };
                    match decide(&answer, &items[index])? {
                        Some(t) => out[index] = Some(t),
                        None => again.push(index),
                    }
                }
                again.sort_by_key(|&i| key(&items[i]));
                pending = again;
            }
        }
        out.into_iter()
            .map(|o| {
                o.ok_or_else(|| {
                    decode::corrupt(self.ns(), format!("{what} left an item unanswered"))
                })
            })
            .collect()
    }

    /// The answer of a claim operation: refused, done, or to decide again.
    fn claimed<T>(
        &self,
        a: &Answer,
        done: impl FnOnce(&Answer) -> Result<T>,
    ) -> Result<Option<Result<T, Refused>>> {
        let ns = self.ns();
        match a.claim(ns)? {
            ClaimDecision::LeaseLost => Ok(Some(Err(Refused::LeaseLost))),
            ClaimDecision::WrongState => Ok(Some(Err(Refused::WrongState(a.state(ns)?)))),
            ClaimDecision::Unreadable => Ok(Some(Err(Refused::Unreadable(a.unreadable(ns)?)))),
            ClaimDecision::Go if a.written => done(a).map(|t| Some(Ok(t))),
            ClaimDecision::Go => Ok(None),
        }
    }

    async fn claims<T>(
        &self,
        what: &str,
        sql: &str,
        claims: &[Claim],
        lease: Option<i64>,
        done: impl Fn(&Answer) -> Result<T>,
    ) -> Result<Vec<Result<T, Refused>>> {
        self.transition(
            what,
            sql,
            claims,
            |c| c.key.as_str(),
            |b| {
                ClaimParams {
                    keys: keys_of(b, |c| c.key.as_str()),
                    tokens: tokens_of(b),
                    lease_ms: lease,
                }
                .into_params()
            },
            |a, _| self.claimed(a, &done),
        )
        .await
    }

    async fn now_ms(&self) -> Result<i64> {
        let rows = self.query("now", &self.inner.sql.now, &[]).await?;
        match rows.first() {
            Some(row) => row
                .try_get(0)
                .map_err(|e| map_pg(e, "now", &self.inner.url, self.ns())),
            None => Err(decode::corrupt(
                self.ns(),
                "the meta table has no row".to_owned(),
            )),
        }
    }

    async fn purge_state(&self, state: State, keep: Keep, now: i64) -> Result<u64> {
        let code = state_code(state);
        let sql = &self.inner.sql;
        let mut removed = 0;
        let mut cutoff = None;
        if let Some(age) = keep.max_age {
            let age = ceil_ms(age);
            cutoff = Some(if age == 0 {
                i64::MAX
            } else {
                now.saturating_sub(age)
            });
        }
        if keep.max_count == Some(0) {
            cutoff = Some(i64::MAX);
        }
        if let Some(cutoff) = cutoff {
            loop {
                let n = self
                    .deleted("purge", &sql.purge_older, &[&code, &cutoff, &PURGE_CHUNK])
                    .await?;
                removed += n;
                if n < PURGE_CHUNK as u64 {
                    break;
                }
            }
        }
        let Some(max) = keep.max_count.filter(|&m| m > 0) else {
            return Ok(removed);
        };
        let Ok(max) = i64::try_from(max) else {
            return Ok(removed);
        };
        let rows = self
            .query_with("purge", &sql.purge_cut, &[&code, &max], true)
            .await?;
        let Some(row) = rows.first() else {
            return Ok(removed);
        };
        let pg = |e| map_pg(e, "purge", &self.inner.url, self.ns());
        let (at, key): (i64, Vec<u8>) = (row.try_get(0).map_err(pg)?, row.try_get(1).map_err(pg)?);
        loop {
            let n = self
                .deleted("purge", &sql.purge_below, &[&code, &at, &key, &PURGE_CHUNK])
                .await?;
            removed += n;
            if n < PURGE_CHUNK as u64 {
                return Ok(removed);
            }
        }
    }

    /// Runs a purge chunk's `… SELECT count(*)` statement and answers the count.
    async fn deleted(&self, what: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let rows = self.query_with(what, sql, params, true).await?;
        let n: i64 = match rows.first() {
            Some(row) => row
                .try_get(0)
                .map_err(|e| map_pg(e, what, &self.inner.url, self.ns()))?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// `offer` or `offer_and_start` (`sql`): the two answer alike, the second with leases
    /// already Running.
    async fn offers(
        &self,
        what: &str,
        sql: &str,
        policy: &Policy,
        offers: &[Offer],
    ) -> Result<Vec<Offered>> {
        let ns = self.ns();
        self.transition(
            what,
            sql,
            offers,
            |o| o.key.as_str(),
            |b| {
                OfferParams {
                    keys: keys_of(b, |o| o.key.as_str()),
                    versions: b
                        .iter()
                        .map(|o| o.version.as_ref().map(|v| v.as_str().as_bytes().to_vec()))
                        .collect(),
                    lease_ms: floor_ms(policy.lease),
                    crash_cap: i64::from(policy.crash_cap),
                    remember: policy.newer_versions == NewerVersions::Remember,
                    completed_ms: window_ms(policy.completed),
                    dead_ms: window_ms(policy.dead),
                }
                .into_params()
            },
            |a, _| {
                use OfferDecision::*;
                match a.offer(ns)? {
                    Duplicate => Ok(Some(Offered::Duplicate(a.state(ns)?))),
                    Unreadable => Ok(Some(Offered::Unreadable(a.unreadable(ns)?))),
                    Outdated => Ok(Some(Offered::Outdated(a.state(ns)?))),
                    _ if !a.written => Ok(None),
                    Insert | Reclaim | Renew => Ok(Some(Offered::Accepted(Lease {
                        token: Token(a.number(a.token, "token", ns)?),
                        expires_at: decode::timestamp(a.value(a.expires_ms, "expiry", ns)?, ns)?,
                        attempts: a.number(a.attempts, "attempts", ns)?,
                    }))),
                    CrashCapped => Ok(Some(Offered::Duplicate(State::Dead))),
                    Remember => Ok(Some(Offered::Duplicate(a.state(ns)?))),
                }
            },
        )
        .await
    }
}

impl Ledger for PostgresLedger {
    async fn offer(&self, policy: &Policy, offers: &[Offer]) -> Result<Vec<Offered>> {
        self.writable("offer")?;
        self.offers("offer", &self.inner.sql.offer, policy, offers)
            .await
    }

    async fn offer_and_start(&self, policy: &Policy, offers: &[Offer]) -> Result<Vec<Offered>> {
        self.writable("offer_and_start")?;
        self.offers(
            "offer_and_start",
            &self.inner.sql.offer_and_start,
            policy,
            offers,
        )
        .await
    }

    async fn start(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> Result<Vec<Result<Started, Refused>>> {
        self.writable("start")?;
        let ns = self.ns();
        let lease = floor_ms(policy.lease);
        self.claims("start", &self.inner.sql.start, claims, Some(lease), |a| {
            Ok(Started {
                attempt: a.number(a.attempts, "attempts", ns)?,
                expires_at: decode::timestamp(a.value(a.expires_ms, "expiry", ns)?, ns)?,
            })
        })
        .await
    }

    async fn renew(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> Result<Vec<Result<Timestamp, Refused>>> {
        self.writable("renew")?;
        let ns = self.ns();
        let lease = floor_ms(policy.lease);
        self.claims("renew", &self.inner.sql.renew, claims, Some(lease), |a| {
            decode::timestamp(a.value(a.expires_ms, "expiry", ns)?, ns)
        })
        .await
    }

    async fn complete(&self, claims: &[Claim]) -> Result<Vec<Result<Done, Refused>>> {
        self.writable("complete")?;
        let ns = self.ns();
        self.claims("complete", &self.inner.sql.complete, claims, None, |a| {
            Ok(Done {
                superseded: a.value(a.superseded, "superseded", ns)?,
            })
        })
        .await
    }

    async fn fail(
        &self,
        policy: &Policy,
        failures: &[Failure],
    ) -> Result<Vec<Result<Failed, Refused>>> {
        self.writable("fail")?;
        let ns = self.ns();
        let lease = floor_ms(policy.lease);
        let max = count_cap(policy.max_attempts);
        self.transition(
            "fail",
            &self.inner.sql.fail,
            failures,
            |f| f.claim.key.as_str(),
            |b| {
                let claims: Vec<&Claim> = b.iter().map(|f| &f.claim).collect();
                FailParams {
                    keys: keys_of(&claims, |c| c.key.as_str()),
                    tokens: tokens_of(&claims),
                    errors: b.iter().map(|f| f.error.as_bytes().to_vec()).collect(),
                    lease_ms: lease,
                    max_attempts: max,
                }
                .into_params()
            },
            |a, _| {
                self.claimed(a, |a| {
                    let attempts = a.number(a.attempts, "attempts", ns)?;
                    Ok(match a.value(a.dead, "dead", ns)? {
                        true => Failed::Dead { attempts },
                        false => Failed::Retry { attempts },
                    })
                })
            },
        )
        .await
    }

    async fn release(&self, claims: &[Claim]) -> Result<Vec<Result<(), Refused>>> {
        self.writable("release")?;
        self.claims("release", &self.inner.sql.release, claims, None, |_| Ok(()))
            .await
    }
}

impl LedgerAdmin for PostgresLedger {
    async fn remove(&self, keys: &[Key], force: bool) -> Result<Vec<Removed>> {
        self.writable("remove")?;
        let ns = self.ns();
        self.transition(
            "remove",
            &self.inner.sql.remove,
            keys,
            Key::as_str,
            |b| {
                KeyParams {
                    keys: keys_of(b, Key::as_str),
                    force: Some(force),
                }
                .into_params()
            },
            |a, k: &Key| match a.by_key(ns)? {
                KeyDecision::NotFound => Ok(Some(Removed::NotFound)),
                KeyDecision::Unreadable => Err(unreadable_key(
                    ns,
                    k.as_str(),
                    a.found.as_deref().unwrap_or(""),
                )),
                KeyDecision::Refused => Ok(Some(Removed::Leased(a.state(ns)?))),
                KeyDecision::Delete if a.written => Ok(Some(Removed::Removed)),
                KeyDecision::Delete => Ok(None),
            },
        )
        .await
    }

    async fn retry(&self, keys: &[Key]) -> Result<Vec<Retried>> {
        self.writable("retry")?;
        let ns = self.ns();
        self.transition(
            "retry",
            &self.inner.sql.retry,
            keys,
            Key::as_str,
            |b| {
                KeyParams {
                    keys: keys_of(b, Key::as_str),
                    force: None,
                }
                .into_params()
            },
            |a, k: &Key| match a.by_key(ns)? {
                KeyDecision::NotFound => Ok(Some(Retried::NotFound)),
                KeyDecision::Unreadable => Err(unreadable_key(
                    ns,
                    k.as_str(),
                    a.found.as_deref().unwrap_or(""),
                )),
                KeyDecision::Refused => Ok(Some(Retried::NotDead(a.state(ns)?))),
                KeyDecision::Delete if a.written => Ok(Some(Retried::Retried)),
                KeyDecision::Delete => Ok(None),
            },
        )
        .await
    }

    async fn purge(&self, retention: &Retention) -> Result<Purged> {
        self.writable("purge")?;
        let mut purged = Purged::default();
        if retention.is_forever() {
            return Ok(purged);
        }
        let now = self.now_ms().await?;
        for (state, keep, n) in [
            (State::Completed, retention.completed, &mut purged.completed),
            (State::Dead, retention.dead, &mut purged.dead),
        ] {
            if !keep.is_forever() {
                *n = self.purge_state(state, keep, now).await?;
            }
        }
        Ok(purged)
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>> {
        let k = key.as_str().as_bytes();
        let rows = self.query("get", &self.inner.sql.get, &[&k]).await?;
        rows.first()
            .map(|row| decode::record(row, self.ns()))
            .transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        let limit = query.limit.max(1);
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let state = state_code(query.state) as usize;
        let sql = &self.inner.sql;
        let rows = match &query.after {
            Some(after) => {
                let after = after.as_str().as_bytes();
                self.query("list", &sql.list_after[state], &[&after, &fetch])
                    .await?
            }
            None => {
                self.query("list", &sql.list_first[state], &[&fetch])
                    .await?
            }
        };
        let mut records = rows
            .iter()
            .map(|row| decode::record(row, self.ns()))
            .collect::<Result<Vec<_>>>()?;
        let next = if records.len() > limit {
            records.truncate(limit);
            records.last().map(|r| r.key.clone())
        } else {
            None
        };
        Ok(Page { records, next })
    }

    async fn stats(&self) -> Result<Stats> {
        let rows = self.query("stats", &self.inner.sql.stats, &[]).await?;
        let pg = |e| map_pg(e, "stats", &self.inner.url, self.ns());
        let Some(row) = rows.first() else {
            return Err(decode::corrupt(
                self.ns(),
                "stats answered no row".to_owned(),
            ));
        };
        let count = |i: usize| -> Result<u64> {
            let n: i64 = row.try_get(i).map_err(pg)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(Stats {
            queued: count(0)?,
            running: count(1)?,
            completed: count(2)?,
            dead: count(3)?,
            expired: count(4)?,
        })
    }

    async fn now(&self) -> Result<Timestamp> {
        decode::timestamp(self.now_ms().await?, self.ns())
    }
}

#[cfg(test)]
mod tests {
    use super::rounds;

    #[test]
    fn copies_of_a_key_go_in_later_rounds_sorted() {
        let keys = ["b", "a", "b", "c", "b", "a"];
        assert_eq!(
            rounds(keys.iter().copied()),
            vec![vec![1, 0, 3], vec![5, 2], vec![4]]
        );
        assert!(rounds(std::iter::empty()).is_empty());
    }
}
