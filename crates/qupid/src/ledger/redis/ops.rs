//! The [`Ledger`] operations: arguments in, one script per call, outcomes out.

use std::collections::HashSet;

use ::redis::{Script, ScriptInvocation, Value};

use super::decode::{
    bad_reply, bytes, expect_len, int, key, letter, ms_ceil, ms_floor, record, uint,
};
use super::schema::shard_of;
use super::scripts::{prepare, run, SCRIPTS};
use super::wire::{self, ByKey, ClaimArgs, FailArgs, OfferArgs, PurgeArgs, RemoveArgs, RetryArgs};
use super::RedisLedger;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::key::{Key, Offer};
use crate::ledger::types::{
    Claim, Done, Failed, Failure, ListQuery, Offered, Page, Purged, Record, Refused, Removed,
    Retried, Started, State, Stats,
};
use crate::ledger::{Ledger, LedgerAdmin};
use crate::policy::{Keep, NewerVersions, Policy, Retention};

/// The most records one purge script removes (about 4 ms of the server's time); `purge`
/// loops until done.
const PURGE_CHUNK: u64 = 1_000;
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

    /// An invocation of `script` over the records of `keys`, all of shard `shard`; the
    /// caller adds the arguments.
    ///
    /// The scripts' second argument says whether no key is there twice: the scripts then keep
    /// records by position instead of by key, which saves them a table write per key. Finding
    /// out costs the client a hash set per batch, and the server nothing.
    fn batch<'a, 'k>(
        &self,
        shard: usize,
        script: &'a Script,
        keys: impl IntoIterator<Item = &'k Key>,
    ) -> ScriptInvocation<'a> {
        let names = &self.inner.shards[shard];
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

    /// Runs the batch script `script` over `items`: one run per shard holding some of them
    /// (the runs of several shards at once), each given its items' record keys and then what
    /// `args` adds for its items, its reply decoded by `decode` (given the reply and how many
    /// items it answers). Answers in the order of `items`.
    async fn sharded<I, T>(
        &self,
        script: &Script,
        what: &str,
        items: &[I],
        key: impl Fn(&I) -> &Key,
        args: impl Fn(&mut ScriptInvocation<'_>, &[&I]),
        decode: impl Fn(&[Value], usize) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let shards = self.inner.shards.len();
        if shards == 1 {
            let refs: Vec<&I> = items.iter().collect();
            let mut inv = self.batch(0, script, items.iter().map(&key));
            args(&mut inv, &refs);
            let values = self.call(&inv, what).await?;
            return decode(&values, items.len());
        }
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); shards];
        for (i, item) in items.iter().enumerate() {
            groups[shard_of(key(item).as_str(), shards)].push(i);
        }
        let runs = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(shard, g)| {
                let refs: Vec<&I> = g.iter().map(|&i| &items[i]).collect();
                let mut inv = self.batch(shard, script, refs.iter().map(|i| key(i)));
                args(&mut inv, &refs);
                let decode = &decode;
                async move {
                    let values = self.call(&inv, what).await?;
                    decode(&values, refs.len())
                }
            });
        let answers = futures::future::try_join_all(runs).await?;
        let mut out: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
        for (g, answer) in groups.iter().filter(|g| !g.is_empty()).zip(answers) {
            for (&i, t) in g.iter().zip(answer) {
                out[i] = Some(t);
            }
        }
        out.into_iter()
            .map(|t| t.ok_or_else(|| bad_reply(what, "an item left unanswered")))
            .collect()
    }

    /// `remove` or `retry` (`script`, with the arguments `args` adds, given whether the run
    /// only checks): an unreadable record fails the call before anything is written. Split
    /// into shards, with `check_first`, every shard is checked (a run that writes nothing)
    /// before any writes.
    async fn by_keys(
        &self,
        script: &Script,
        what: &str,
        keys: &[Key],
        check_first: bool,
        args: impl Fn(&mut ScriptInvocation<'_>, bool),
    ) -> Result<Vec<ByKey>> {
        let args = &args;
        let run = |check_only: bool| {
            self.sharded(
                script,
                what,
                keys,
                |k| k,
                move |inv, _| args(inv, check_only),
                move |values, n| wire::by_key(values, n, what),
            )
        };
        if check_first && self.inner.shards.len() > 1 {
            run(true).await?;
        }
        run(false).await
    }

    /// `offer`, or with `start` `offer_and_start`: one run of the offer script per shard,
    /// which starts an attempt on each accepted key itself when told to.
    async fn offer_script(
        &self,
        policy: &Policy,
        offers: &[Offer],
        start: bool,
    ) -> Result<Vec<Offered>> {
        let what = if start { "offer_and_start" } else { "offer" };
        self.sharded(
            &SCRIPTS.offer,
            what,
            offers,
            |o| &o.key,
            |inv, offers| {
                OfferArgs {
                    lease_ms: ms_floor(policy.lease),
                    crash_cap: policy.crash_cap,
                    remember: policy.newer_versions == NewerVersions::Remember,
                    completed: policy.completed,
                    dead: policy.dead,
                    start,
                    offers,
                }
                .add_to(inv)
            },
            |values, n| wire::offered(values, n, what),
        )
        .await
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
        let lease_ms = Some(ms_floor(policy.lease));
        self.sharded(
            &SCRIPTS.start,
            "start",
            claims,
            |c| &c.key,
            |inv, claims| ClaimArgs { lease_ms, claims }.add_to(inv),
            |values, n| wire::claimed(values, n, 3, "start", wire::started),
        )
        .await
    }

    async fn renew(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> Result<Vec<Result<Timestamp, Refused>>> {
        self.writable("renew")?;
        let lease_ms = Some(ms_floor(policy.lease));
        self.sharded(
            &SCRIPTS.renew,
            "renew",
            claims,
            |c| &c.key,
            |inv, claims| ClaimArgs { lease_ms, claims }.add_to(inv),
            |values, n| wire::claimed(values, n, 3, "renew", wire::renewed),
        )
        .await
    }

    async fn complete(&self, claims: &[Claim]) -> Result<Vec<Result<Done, Refused>>> {
        self.writable("complete")?;
        self.sharded(
            &SCRIPTS.complete,
            "complete",
            claims,
            |c| &c.key,
            |inv, claims| {
                ClaimArgs {
                    lease_ms: None,
                    claims,
                }
                .add_to(inv)
            },
            wire::completed,
        )
        .await
    }

    async fn fail(
        &self,
        policy: &Policy,
        failures: &[Failure],
    ) -> Result<Vec<Result<Failed, Refused>>> {
        self.writable("fail")?;
        self.sharded(
            &SCRIPTS.fail,
            "fail",
            failures,
            |f| &f.claim.key,
            |inv, failures| {
                FailArgs {
                    lease_ms: ms_floor(policy.lease),
                    max_attempts: policy.max_attempts,
                    failures,
                }
                .add_to(inv)
            },
            |values, n| wire::claimed(values, n, 3, "fail", wire::failed),
        )
        .await
    }

    async fn release(&self, claims: &[Claim]) -> Result<Vec<Result<(), Refused>>> {
        self.writable("release")?;
        self.sharded(
            &SCRIPTS.release,
            "release",
            claims,
            |c| &c.key,
            |inv, claims| {
                ClaimArgs {
                    lease_ms: None,
                    claims,
                }
                .add_to(inv)
            },
            |values, n| wire::claimed(values, n, 2, "release", |_| Ok(())),
        )
        .await
    }
}

impl LedgerAdmin for RedisLedger {
    async fn remove(&self, keys: &[Key], force: bool) -> Result<Vec<Removed>> {
        self.writable("remove")?;
        // Forced, an unreadable record is removed too: nothing to check first.
        let out = self
            .by_keys(
                &SCRIPTS.remove,
                "remove",
                keys,
                !force,
                |inv, check_only| RemoveArgs { force, check_only }.add_to(inv),
            )
            .await?;
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
        let out = self
            .by_keys(&SCRIPTS.retry, "retry", keys, true, |inv, check_only| {
                RetryArgs { check_only }.add_to(inv)
            })
            .await?;
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
        let sharded = self.inner.shards.len() > 1;
        // Split into shards, a namespace keeps its newest records by count across all of
        // them: the cut (the oldest record kept) is found over every shard first.
        let (completed_cut, dead_cut) = if sharded {
            (
                self.count_cut(State::Completed, retention.completed.max_count)
                    .await?,
                self.count_cut(State::Dead, retention.dead.max_count)
                    .await?,
            )
        } else {
            (None, None)
        };
        // Unsharded, the script applies the count itself; sharded, only a count of 0 (keep
        // none), which every shard applies alike, and the cut otherwise.
        let count = |k: Keep| match k.max_count {
            Some(0) => Some(0),
            n if !sharded => n,
            _ => None,
        };
        let runs = (0..self.inner.shards.len()).map(|shard| {
            let completed_cut = completed_cut.as_ref().map(|c| c.of(shard));
            let dead_cut = dead_cut.as_ref().map(|c| c.of(shard));
            async move {
                let mut purged = Purged::default();
                let mut now = None;
                loop {
                    let mut inv = prepare(&SCRIPTS.purge, &self.inner.shards[shard]);
                    PurgeArgs {
                        completed: (age(retention.completed), count(retention.completed)),
                        dead: (age(retention.dead), count(retention.dead)),
                        chunk: PURGE_CHUNK,
                        completed_cut,
                        dead_cut,
                        now,
                    }
                    .add_to(&mut inv);
                    let values = self.call(&inv, "purge").await?;
                    let (p, more, clock) = wire::purged(&values)?;
                    now = Some(clock);
                    purged.completed += p.completed;
                    purged.dead += p.dead;
                    if !more {
                        return Ok::<_, crate::Error>(purged);
                    }
                }
            }
        });
        for p in futures::future::try_join_all(runs).await? {
            purged.completed += p.completed;
            purged.dead += p.dead;
        }
        Ok(purged)
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>> {
        let shard = shard_of(key.as_str(), self.inner.shards.len());
        let inv = self.batch(shard, &SCRIPTS.get, [key]);
        let values = self.call(&inv, "get").await?;
        match values.first() {
            None => Ok(None),
            Some(fields) => record(key.clone(), fields).map(Some),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        // Each shard's first `limit + 1` keys after the bound, merged in key (byte) order:
        // the page's keys are among them.
        let runs = self.inner.shards.iter().map(|keys| {
            let mut inv = prepare(&SCRIPTS.list, keys);
            inv.arg(letter(query.state))
                .arg(query.after.as_ref().map_or("", Key::as_str))
                .arg(limit + 1);
            async move {
                let values = self.call(&inv, "list").await?;
                if values.len() % 2 != 0 {
                    return Err(bad_reply("list", "an odd number of values"));
                }
                values
                    .chunks(2)
                    .map(|pair| record(key(&pair[0], &self.inner.namespace)?, &pair[1]))
                    .collect::<Result<Vec<_>>>()
            }
        });
        let mut records: Vec<Record> = futures::future::try_join_all(runs)
            .await?
            .into_iter()
            .flatten()
            .collect();
        if self.inner.shards.len() > 1 {
            records.sort_by(|a, b| a.key.as_str().as_bytes().cmp(b.key.as_str().as_bytes()));
        }
        let next = if records.len() > limit {
            records.truncate(limit);
            records.last().map(|r| r.key.clone())
        } else {
            None
        };
        Ok(Page { records, next })
    }

    async fn stats(&self) -> Result<Stats> {
        let runs = (0..self.inner.shards.len()).map(|shard| self.shard_stats(shard));
        let mut stats = Stats::default();
        for s in futures::future::try_join_all(runs).await? {
            stats.queued += s.queued;
            stats.running += s.running;
            stats.completed += s.completed;
            stats.dead += s.dead;
            stats.expired += s.expired;
        }
        Ok(stats)
    }

    async fn now(&self) -> Result<Timestamp> {
        let inv = prepare(&SCRIPTS.now, &self.inner.shards[0]);
        let values = self.call(&inv, "now").await?;
        expect_len(&values, 1, 1, "now")?;
        // A negative clock (a large negative offset) reads as the epoch.
        Ok(Timestamp(
            u64::try_from(int(&values, 0, "now")?).unwrap_or(0),
        ))
    }
}

impl RedisLedger {
    /// The counts of one shard (of the whole namespace, unsharded).
    async fn shard_stats(&self, shard: usize) -> Result<Stats> {
        let what = "stats";
        let mut stats = Stats::default();
        // Where the count of expired leases goes on from: a leased state and a member.
        let (mut state, mut after) = (Vec::new(), Vec::new());
        let mut now: Option<i64> = None;
        loop {
            let mut inv = prepare(&SCRIPTS.stats, &self.inner.shards[shard]);
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

    /// In a sharded namespace, where purging `state` down to the newest `keep` records cuts
    /// across the shards (none if `keep` is not set or 0, or the namespace holds no more).
    ///
    /// Records are ordered by (finish time, key), oldest first, across every shard. The cut
    /// is the oldest record kept, at time `T`: a binary search over finish times finds the
    /// newest `T` with at least `keep` records at or after it (each step a `ZCOUNT` per
    /// shard), then the records finished at `T` are read from every shard and ordered by key.
    /// A shard then removes its records finished before `T` and as many of those finished at
    /// `T` as come before the cut: the same keys an unsharded namespace would remove.
    async fn count_cut(&self, state: State, keep: Option<u64>) -> Result<Option<Cut>> {
        let Some(keep) = keep.filter(|&k| k > 0) else {
            return Ok(None);
        };
        let fin = |shard: usize| {
            self.inner.shards[shard]
                .finished(state == State::Dead)
                .to_owned()
        };
        let shards = self.inner.shards.len();
        let conn = &self.inner.conn;
        let what = "purge";
        let map = |e| super::errors::map_redis(e, what, &self.inner.namespace);
        // How many records of every shard finished at or after `from` (`(from` excludes it).
        let at_or_after = |from: String| {
            let runs = (0..shards).map(move |s| {
                let (key, from) = (fin(s), from.clone());
                let mut conn = conn.clone();
                async move {
                    ::redis::cmd("ZCOUNT")
                        .arg(key)
                        .arg(from)
                        .arg("+inf")
                        .query_async::<u64>(&mut conn)
                        .await
                        .map_err(map)
                }
            });
            async move {
                Ok::<u64, crate::Error>(futures::future::try_join_all(runs).await?.iter().sum())
            }
        };
        if at_or_after("-inf".to_owned()).await? <= keep {
            return Ok(None);
        }
        // The oldest and newest finish times over every shard bound the search.
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for s in 0..shards {
            let mut c = conn.clone();
            for (start, stop, rev) in [(0, 0, false), (0, 0, true)] {
                let cmd = if rev { "ZREVRANGE" } else { "ZRANGE" };
                let found: Vec<(Vec<u8>, f64)> = ::redis::cmd(cmd)
                    .arg(fin(s))
                    .arg(start)
                    .arg(stop)
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await
                    .map_err(map)?;
                if let Some((_, score)) = found.first() {
                    let t = *score as i64;
                    lo = lo.min(t);
                    hi = hi.max(t);
                }
            }
        }
        // Invariant: at least `keep` records at or after `lo`, fewer at or after `hi + 1`.
        hi += 1;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if at_or_after(mid.to_string()).await? >= keep {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let time = lo;
        let newer = at_or_after(format!("({time}")).await?;
        // The cut is the `need`-th newest of the records finished at `time`.
        let need = keep.saturating_sub(newer);
        let mut at_time: Vec<(Vec<u8>, usize)> = Vec::new();
        for s in 0..shards {
            let mut c = conn.clone();
            let members: Vec<Vec<u8>> = ::redis::cmd("ZRANGEBYSCORE")
                .arg(fin(s))
                .arg(time)
                .arg(time)
                .query_async(&mut c)
                .await
                .map_err(map)?;
            at_time.extend(members.into_iter().map(|m| (m, s)));
        }
        at_time.sort();
        // Records finished at `time` that go: the oldest `len - need`, counted per shard.
        let going = at_time
            .len()
            .saturating_sub(usize::try_from(need).unwrap_or(usize::MAX));
        let mut per_shard = vec![0u64; shards];
        for (_, s) in &at_time[..going] {
            per_shard[*s] += 1;
        }
        Ok(Some(Cut { time, per_shard }))
    }
}

/// Where a purge by count cuts a sharded namespace: every record finished before `time`
/// goes, and in each shard, as many of those finished at `time` as `per_shard` says (the
/// oldest by key).
#[derive(Debug)]
struct Cut {
    time: i64,
    per_shard: Vec<u64>,
}

impl Cut {
    fn of(&self, shard: usize) -> (i64, u64) {
        (self.time, self.per_shard[shard])
    }
}
