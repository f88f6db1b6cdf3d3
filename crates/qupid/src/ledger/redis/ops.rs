//! The [`Ledger`] operations: arguments in, one script per call, outcomes out.

use std::collections::HashSet;

use ::redis::{Script, ScriptInvocation, Value};

use super::decode::{
    bad_reply, bytes, expect_len, int, key, letter, ms_ceil, ms_floor, record, uint,
};
use super::scripts::{prepare, run, SCRIPTS};
use super::wire::{self, ByKey, ClaimArgs, FailArgs, OfferArgs, PurgeArgs, RemoveArgs};
use super::RedisLedger;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::key::{Key, Offer};
use crate::ledger::types::{
    Claim, Done, Failed, Failure, ListQuery, Offered, Page, Purged, Record, Refused, Removed,
    Retried, Started, Stats,
};
use crate::ledger::{Ledger, LedgerAdmin};
use crate::policy::{Keep, NewerVersions, Policy, Retention};

/// The most records one purge script removes; `purge` loops until done.
const PURGE_CHUNK: u64 = 5_000;
/// The most leased records one stats script reads to count expired leases (about 4 ms of the
/// server's time); `stats` loops until it has read them all.
const STATS_CHUNK: u64 = 2_000;
/// The largest page `list` answers (a page is one script, which blocks the server while it
/// runs); callers follow `next` for more.
const MAX_PAGE: usize = 10_000;

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
        OfferArgs {
            lease_ms: ms_floor(policy.lease),
            crash_cap: policy.crash_cap,
            remember: policy.newer_versions == NewerVersions::Remember,
            completed: policy.completed,
            dead: policy.dead,
            start,
            offers,
        }
        .add_to(&mut inv);
        let what = if start { "offer_and_start" } else { "offer" };
        let values = self.call(&inv, what).await?;
        wire::offered(&values, offers.len(), what)
    }
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
        ClaimArgs {
            lease_ms: Some(ms_floor(policy.lease)),
            claims,
        }
        .add_to(&mut inv);
        let values = self.call(&inv, "start").await?;
        wire::claimed(&values, claims.len(), 3, "start", wire::started)
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
        ClaimArgs {
            lease_ms: Some(ms_floor(policy.lease)),
            claims,
        }
        .add_to(&mut inv);
        let values = self.call(&inv, "renew").await?;
        wire::claimed(&values, claims.len(), 3, "renew", wire::renewed)
    }

    async fn complete(&self, claims: &[Claim]) -> Result<Vec<Result<Done, Refused>>> {
        self.writable("complete")?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.batch(&SCRIPTS.complete, claims.iter().map(|c| &c.key));
        ClaimArgs {
            lease_ms: None,
            claims,
        }
        .add_to(&mut inv);
        let values = self.call(&inv, "complete").await?;
        wire::completed(&values, claims.len())
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
        FailArgs {
            lease_ms: ms_floor(policy.lease),
            max_attempts: policy.max_attempts,
            failures,
        }
        .add_to(&mut inv);
        let values = self.call(&inv, "fail").await?;
        wire::claimed(&values, failures.len(), 3, "fail", wire::failed)
    }

    async fn release(&self, claims: &[Claim]) -> Result<Vec<Result<(), Refused>>> {
        self.writable("release")?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.batch(&SCRIPTS.release, claims.iter().map(|c| &c.key));
        ClaimArgs {
            lease_ms: None,
            claims,
        }
        .add_to(&mut inv);
        let values = self.call(&inv, "release").await?;
        wire::claimed(&values, claims.len(), 2, "release", |_| Ok(()))
    }
}

impl LedgerAdmin for RedisLedger {
    async fn remove(&self, keys: &[Key], force: bool) -> Result<Vec<Removed>> {
        self.writable("remove")?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.batch(&SCRIPTS.remove, keys);
        RemoveArgs { force }.add_to(&mut inv);
        let values = self.call(&inv, "remove").await?;
        let out = wire::by_key(&values, keys.len(), "remove")?;
        Ok(out
            .into_iter()
            .map(|o| match o {
                ByKey::Done => Removed::Removed,
                ByKey::NotFound => Removed::NotFound,
                ByKey::Refused(s) => Removed::Leased(s),
            })
            .collect())
    }

    async fn retry(&self, keys: &[Key]) -> Result<Vec<Retried>> {
        self.writable("retry")?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let inv = self.batch(&SCRIPTS.retry, keys);
        let values = self.call(&inv, "retry").await?;
        let out = wire::by_key(&values, keys.len(), "retry")?;
        Ok(out
            .into_iter()
            .map(|o| match o {
                ByKey::Done => Retried::Retried,
                ByKey::NotFound => Retried::NotFound,
                ByKey::Refused(s) => Retried::NotDead(s),
            })
            .collect())
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
            PurgeArgs {
                completed: (age(retention.completed), retention.completed.max_count),
                dead: (age(retention.dead), retention.dead.max_count),
                chunk: PURGE_CHUNK,
            }
            .add_to(&mut inv);
            let values = self.call(&inv, "purge").await?;
            let (p, more) = wire::purged(&values)?;
            purged.completed += p.completed;
            purged.dead += p.dead;
            if !more {
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
