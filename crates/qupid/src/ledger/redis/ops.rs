//! The [`Ledger`] operations: arguments in, one script per call, outcomes out.

use std::collections::HashSet;

use ::redis::{Script, ScriptInvocation, Value};

use super::decode::{
    bad_reply, bytes, count, expect_len, int, key, letter, ms_ceil, ms_floor, record, refusal,
    state, uint, unreadable,
};
use super::scripts::{prepare, run, SCRIPTS};
use super::RedisLedger;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::key::{Key, Offer, Version};
use crate::ledger::types::{
    Claim, Done, Failed, Failure, Lease, ListQuery, Offered, Page, Purged, Record, Refused,
    Removed, Retried, Started, Stats, Token,
};
use crate::ledger::{Ledger, LedgerAdmin};
use crate::policy::{Blocking, Keep, NewerVersions, Policy, Retention};

/// The most records one purge script removes; `purge` loops until done.
const PURGE_CHUNK: u64 = 5_000;
/// The most leased records one stats script reads to count expired leases (about 4 ms of the
/// server's time); `stats` loops until it has read them all.
const STATS_CHUNK: u64 = 2_000;
/// The largest page `list` answers (a page is one script, which blocks the server while it
/// runs); callers follow `next` for more.
const MAX_PAGE: usize = 10_000;

/// How a blocking rule travels to the scripts: -1 forever, -2 never, or a window in ms.
fn blocking(b: Blocking) -> i64 {
    match b {
        Blocking::Forever => -1,
        Blocking::Never => -2,
        Blocking::For(d) => i64::try_from(ms_ceil(d)).unwrap_or(i64::MAX),
    }
}

/// How a retention limit travels to the scripts: -1 for none.
fn limit(n: Option<u64>) -> i64 {
    n.map_or(-1, |n| {
        i64::try_from(n.min(super::decode::MAX_MS)).unwrap_or(i64::MAX)
    })
}

impl RedisLedger {
    /// `Ok` unless the ledger was opened read-only; `doing` names the refused call.
    fn writable(&self, doing: &str) -> Result<()> {
        if self.inner.read_only {
            return Err(crate::ledger::read_only_error(
                &format!(
                    "redis namespace {:?} at {}",
                    self.inner.namespace, self.inner.url
                ),
                doing,
            ));
        }
        Ok(())
    }

    async fn call(&self, inv: &ScriptInvocation<'_>, what: &str) -> Result<Vec<Value>> {
        run(inv, &self.inner.conn, what, &self.inner.namespace).await
    }

    /// An invocation of `script` over the records of `keys`; the caller adds the arguments.
    ///
    /// The scripts' second argument says whether no key is there twice: the scripts then keep
    /// records by position instead of by key, which saves them a table write per key. Finding
    /// out costs the client a hash set per batch, and the server nothing.
    fn batch<'a, 'k>(
        &self,
        script: &'a Script,
        keys: impl IntoIterator<Item = &'k Key>,
    ) -> ScriptInvocation<'a> {
        let names = &self.inner.keys;
        let mut inv = prepare(script, names);
        let mut seen = HashSet::new();
        let mut unique = true;
        for k in keys {
            inv.key(names.record(k.as_str()));
            unique &= seen.insert(k.as_str());
        }
        inv.arg(if unique { "1" } else { "0" });
        inv
    }

    /// `offer`, or with `start` `offer_and_start`: one run of the offer script, which starts
    /// an attempt on each accepted key itself when told to.
    async fn offer_script(
        &self,
        policy: &Policy,
        offers: &[Offer],
        start: bool,
    ) -> Result<Vec<Offered>> {
        if offers.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.batch(&SCRIPTS.offer, offers.iter().map(|o| &o.key));
        let remember = policy.newer_versions == NewerVersions::Remember;
        inv.arg(ms_floor(policy.lease))
            .arg(policy.crash_cap)
            .arg(if remember { "1" } else { "0" })
            .arg(blocking(policy.completed))
            .arg(blocking(policy.dead))
            .arg(if start { "1" } else { "0" });
        // Without any version, the versions are left out (each argument costs the server).
        if offers.iter().any(|o| o.version.is_some()) {
            for o in offers {
                inv.arg(o.version.as_ref().map_or("", Version::as_str));
            }
        }
        let what = if start { "offer_and_start" } else { "offer" };
        let values = self.call(&inv, what).await?;
        // The lease expiry of every accepted key, then two values per item.
        let expires_at = Timestamp(uint(&values, 0, what)?);
        let items = values.get(1..).unwrap_or_default();
        expect_len(items, offers.len(), 2, what)?;
        items
            .chunks(2)
            .map(|c| match unreadable(c, 0) {
                Some(u) => Ok(Offered::Unreadable(u)),
                None => self.offered(c, expires_at, what),
            })
            .collect()
    }

    /// One item of the offer script's reply that is not unreadable.
    fn offered(&self, c: &[Value], expires_at: Timestamp, what: &str) -> Result<Offered> {
        match int(c, 0, what)? {
            0 => Ok(Offered::Duplicate(state(int(c, 1, what)?, what)?)),
            -1 => Ok(Offered::Outdated(state(int(c, 1, what)?, what)?)),
            _ => Ok(Offered::Accepted(Lease {
                token: Token(uint(c, 0, what)?),
                expires_at,
                attempts: count(c, 1, what)?,
            })),
        }
    }

    /// Runs a claim script and decodes `per` values per claim: code 0 is success, read by
    /// `ok`; codes 1 and 2 are refusals, and a string in place of the code an unreadable
    /// record.
    async fn claims<T>(
        &self,
        inv: &ScriptInvocation<'_>,
        n: usize,
        per: usize,
        what: &str,
        ok: impl Fn(&[Value]) -> Result<T>,
    ) -> Result<Vec<Result<T, Refused>>> {
        let values = self.call(inv, what).await?;
        expect_len(&values, n, per, what)?;
        values
            .chunks(per)
            .map(|c| {
                if let Some(u) = unreadable(c, 0) {
                    return Ok(Err(Refused::Unreadable(u)));
                }
                match int(c, 0, what)? {
                    0 => ok(c).map(Ok),
                    code => Ok(Err(refusal(code, int(c, 1, what)?, what)?)),
                }
            })
            .collect()
    }
}

fn tokens<'c>(claims: impl Iterator<Item = &'c Claim>) -> Vec<u64> {
    claims.map(|c| c.token.0).collect()
}

impl Ledger for RedisLedger {
    async fn offer(&self, policy: &Policy, offers: &[Offer]) -> Result<Vec<Offered>> {
        self.writable("offer")?;
        self.offer_script(policy, offers, false).await
    }

    async fn offer_and_start(&self, policy: &Policy, offers: &[Offer]) -> Result<Vec<Offered>> {
        self.writable("offer_and_start")?;
        self.offer_script(policy, offers, true).await
    }

    async fn start(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> Result<Vec<Result<Started, Refused>>> {
        self.writable("start")?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.batch(&SCRIPTS.start, claims.iter().map(|c| &c.key));
        inv.arg(ms_floor(policy.lease)).arg(tokens(claims.iter()));
        self.claims(&inv, claims.len(), 3, "start", |c| {
            Ok(Started {
                attempt: count(c, 1, "start")?,
                expires_at: Timestamp(uint(c, 2, "start")?),
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
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.batch(&SCRIPTS.renew, claims.iter().map(|c| &c.key));
        inv.arg(ms_floor(policy.lease)).arg(tokens(claims.iter()));
        self.claims(&inv, claims.len(), 3, "renew", |c| {
            Ok(Timestamp(uint(c, 1, "renew")?))
        })
        .await
    }

    async fn complete(&self, claims: &[Claim]) -> Result<Vec<Result<Done, Refused>>> {
        self.writable("complete")?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.batch(&SCRIPTS.complete, claims.iter().map(|c| &c.key));
        inv.arg(tokens(claims.iter()));
        let what = "complete";
        let values = self.call(&inv, what).await?;
        expect_len(&values, claims.len(), 1, what)?;
        // One integer per claim (the busiest reply, so the smallest), or a string for an
        // unreadable record.
        (0..values.len())
            .map(|i| {
                if let Some(u) = unreadable(&values, i) {
                    return Ok(Err(Refused::Unreadable(u)));
                }
                match int(&values, i, what)? {
                    0 => Ok(Ok(Done { superseded: false })),
                    1 => Ok(Ok(Done { superseded: true })),
                    2 => Ok(Err(Refused::LeaseLost)),
                    code => Ok(Err(Refused::WrongState(state(code - 3, what)?))),
                }
            })
            .collect()
    }

    async fn fail(
        &self,
        policy: &Policy,
        failures: &[Failure],
    ) -> Result<Vec<Result<Failed, Refused>>> {
        self.writable("fail")?;
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.batch(&SCRIPTS.fail, failures.iter().map(|f| &f.claim.key));
        inv.arg(ms_floor(policy.lease)).arg(policy.max_attempts);
        for f in failures {
            inv.arg(f.claim.token.0).arg(f.error.as_str());
        }
        self.claims(&inv, failures.len(), 3, "fail", |c| {
            let attempts = count(c, 2, "fail")?;
            Ok(if int(c, 1, "fail")? == 1 {
                Failed::Dead { attempts }
            } else {
                Failed::Retry { attempts }
            })
        })
        .await
    }

    async fn release(&self, claims: &[Claim]) -> Result<Vec<Result<(), Refused>>> {
        self.writable("release")?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.batch(&SCRIPTS.release, claims.iter().map(|c| &c.key));
        inv.arg(tokens(claims.iter()));
        self.claims(&inv, claims.len(), 2, "release", |_| Ok(()))
            .await
    }
}

impl LedgerAdmin for RedisLedger {
    async fn remove(&self, keys: &[Key], force: bool) -> Result<Vec<Removed>> {
        self.writable("remove")?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.batch(&SCRIPTS.remove, keys);
        inv.arg(if force { "1" } else { "0" });
        let what = "remove";
        let values = self.call(&inv, what).await?;
        expect_len(&values, keys.len(), 2, what)?;
        values
            .chunks(2)
            .map(|c| match int(c, 0, what)? {
                0 => Ok(Removed::Removed),
                1 => Ok(Removed::NotFound),
                _ => Ok(Removed::Leased(state(int(c, 1, what)?, what)?)),
            })
            .collect()
    }

    async fn retry(&self, keys: &[Key]) -> Result<Vec<Retried>> {
        self.writable("retry")?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let inv = self.batch(&SCRIPTS.retry, keys);
        let what = "retry";
        let values = self.call(&inv, what).await?;
        expect_len(&values, keys.len(), 2, what)?;
        values
            .chunks(2)
            .map(|c| match int(c, 0, what)? {
                0 => Ok(Retried::Retried),
                1 => Ok(Retried::NotFound),
                _ => Ok(Retried::NotDead(state(int(c, 1, what)?, what)?)),
            })
            .collect()
    }

    async fn purge(&self, retention: &Retention) -> Result<Purged> {
        self.writable("purge")?;
        let mut purged = Purged::default();
        if retention.is_forever() {
            return Ok(purged);
        }
        let age = |k: Keep| k.max_age.map(ms_ceil);
        loop {
            let mut inv = prepare(&SCRIPTS.purge, &self.inner.keys);
            inv.arg(limit(age(retention.completed)))
                .arg(limit(retention.completed.max_count))
                .arg(limit(age(retention.dead)))
                .arg(limit(retention.dead.max_count))
                .arg(PURGE_CHUNK);
            let values = self.call(&inv, "purge").await?;
            expect_len(&values, 1, 3, "purge")?;
            purged.completed += uint(&values, 0, "purge")?;
            purged.dead += uint(&values, 1, "purge")?;
            if int(&values, 2, "purge")? == 0 {
                return Ok(purged);
            }
        }
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>> {
        let inv = self.batch(&SCRIPTS.get, [key]);
        let values = self.call(&inv, "get").await?;
        match values.first() {
            None => Ok(None),
            Some(fields) => record(key.clone(), fields).map(Some),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let mut inv = prepare(&SCRIPTS.list, &self.inner.keys);
        inv.arg(letter(query.state))
            .arg(query.after.as_ref().map_or("", Key::as_str))
            .arg(limit + 1);
        let values = self.call(&inv, "list").await?;
        if values.len() % 2 != 0 {
            return Err(bad_reply("list", "an odd number of values"));
        }
        let mut records = values
            .chunks(2)
            .map(|pair| record(key(&pair[0], &self.inner.namespace)?, &pair[1]))
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
        let what = "stats";
        let mut stats = Stats::default();
        // Where the count of expired leases goes on from: a leased state and a member.
        let (mut state, mut after) = (Vec::new(), Vec::new());
        let mut now: Option<i64> = None;
        loop {
            let mut inv = prepare(&SCRIPTS.stats, &self.inner.keys);
            inv.arg(&state[..])
                .arg(&after[..])
                .arg(STATS_CHUNK)
                .arg(now.map_or_else(String::new, |n| n.to_string()));
            let values = self.call(&inv, what).await?;
            expect_len(&values, 1, 8, what)?;
            if now.is_none() {
                // The counts of the first script, which read the clock: one moment.
                stats.queued = uint(&values, 0, what)?;
                stats.running = uint(&values, 1, what)?;
                stats.completed = uint(&values, 2, what)?;
                stats.dead = uint(&values, 3, what)?;
            }
            stats.expired += uint(&values, 4, what)?;
            now = Some(int(&values, 7, what)?);
            state = bytes(&values, 5, what)?;
            after = bytes(&values, 6, what)?;
            if state.is_empty() {
                return Ok(stats);
            }
        }
    }

    async fn now(&self) -> Result<Timestamp> {
        let inv = prepare(&SCRIPTS.now, &self.inner.keys);
        let values = self.call(&inv, "now").await?;
        expect_len(&values, 1, 1, "now")?;
        // A negative clock (a large negative offset) reads as the epoch.
        Ok(Timestamp(
            u64::try_from(int(&values, 0, "now")?).unwrap_or(0),
        ))
    }
}
