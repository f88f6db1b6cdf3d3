//! The in-memory ledger: the default, for one process.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hashbrown::hash_map::EntryRef;
use hashbrown::{DefaultHashBuilder, HashMap};

use super::types::*;
use super::Ledger;
use crate::clock::{Clock, MonotonicClock, Timestamp};
use crate::error::Result;
use crate::key::{Key, Offer, Version};
use crate::policy::{Keep, NewerVersions, Policy, Retention};

const ABANDONED: &str = "abandoned";

/// The default ledger: a sharded concurrent map in this process's memory.
///
/// Nothing to set up, and the fastest ledger, but it forgets everything when the process
/// exits: use a durable ledger when completed keys must stay completed across restarts.
///
/// Keys are spread over shards by hash, each behind its own short-held mutex, so workers on
/// different keys do not contend; a batch locks each shard it touches once. Leases expire by a
/// [`Clock`]: [`MonotonicClock`] by default (which follows tokio's clock, so paused-time tests
/// work), or a [`ManualClock`](crate::clock::ManualClock) in tests.
///
/// A retained finished key costs about 120 bytes plus its length (measured at a million keys;
/// see the README's benchmark);
/// `list` scans every shard, so it costs time in proportion to the number of keys. So does
/// `stats` while any key is in flight: its counts per state are kept as keys move, but the
/// expired leases are counted by walking the records of each shard that holds a leased key
/// (about 15 ms for a million keys, measured on a shared 2-core machine). Indexing leases by
/// expiry would cost every transition instead.
///
/// Cloning is cheap: clones share the same data. [`read_only`](MemoryLedger::read_only)
/// makes a clone that refuses writes.
#[derive(Clone)]
pub struct MemoryLedger {
    inner: Arc<Inner>,
    read_only: bool,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: DefaultHashBuilder,
    tokens: AtomicU64,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<str>, Slot>,
    counts: Stats,
}

/// One key's record, kept small: a retained key costs this plus the map's overhead.
struct Slot {
    state: State,
    superseded: bool,
    attempts: u16,
    abandoned: u16,
    token: u64,
    /// Lease expiry while Queued/Running; finish time once Completed/Dead.
    at: u64,
    /// Rare data lives behind one optional allocation.
    extra: Option<Box<Extra>>,
}

#[derive(Default)]
struct Extra {
    version: Option<Version>,
    newer: Option<Version>,
    error: Option<String>,
}

impl Slot {
    fn version(&self) -> Option<&Version> {
        self.extra.as_ref().and_then(|e| e.version.as_ref())
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    fn set_version(&mut self, version: Option<&Version>) {
        match version {
            Some(v) => self.extra().version = Some(v.clone()),
            None => {
                if let Some(e) = self.extra.as_mut() {
                    e.version = None;
                }
            }
        }
        self.tidy();
    }

    fn set_error(&mut self, error: Option<&str>) {
        match error {
            Some(e) => self.extra().error = Some(e.to_owned()),
            None => {
                if let Some(x) = self.extra.as_mut() {
                    x.error = None;
                }
            }
        }
        self.tidy();
    }

    fn take_newer(&mut self) -> Option<Version> {
        let newer = self.extra.as_mut().and_then(|e| e.newer.take());
        self.tidy();
        newer
    }

    fn tidy(&mut self) {
        if let Some(e) = &self.extra {
            if e.version.is_none() && e.newer.is_none() && e.error.is_none() {
                self.extra = None;
            }
        }
    }

    fn record(&self, key: &str) -> Option<Record> {
        let extra = self.extra.as_deref();
        Some(Record {
            key: Key::new(key).ok()?,
            state: self.state,
            version: extra.and_then(|e| e.version.clone()),
            newer_version: extra.and_then(|e| e.newer.clone()),
            attempts: u32::from(self.attempts),
            abandoned: u32::from(self.abandoned),
            token: Token(self.token),
            expires_at: self.state.is_leased().then_some(Timestamp(self.at)),
            finished_at: self.state.is_finished().then_some(Timestamp(self.at)),
            last_error: extra.and_then(|e| e.error.clone()),
            superseded: self.superseded,
        })
    }
}

/// Moves one record from `from` to `to` in the shard's counts.
fn shift(counts: &mut Stats, from: State, to: State) {
    *counts.count_mut(from) -= 1;
    *counts.count_mut(to) += 1;
}

impl MemoryLedger {
    /// An empty ledger on a [`MonotonicClock`], with 64 shards.
    pub fn new() -> Self {
        Self::with_clock(MonotonicClock::new())
    }

    /// An empty ledger whose leases expire by `clock`.
    pub fn with_clock(clock: impl Clock) -> Self {
        Self::with_shards(clock, 64)
    }

    /// An empty ledger on `clock` with `shards` shards (at least 1).
    pub fn with_shards(clock: impl Clock, shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Mutex::new(Shard::default()))
            .collect();
        MemoryLedger {
            inner: Arc::new(Inner {
                shards,
                hasher: DefaultHashBuilder::default(),
                tokens: AtomicU64::new(0),
                clock: Arc::new(clock),
            }),
            read_only: false,
        }
    }

    /// A handle on the same records that refuses every write: its `offer`, `start`, `renew`,
    /// `complete`, `fail`, `release`, `remove`, `retry` and `purge` answer
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) and change nothing, while `get`,
    /// `list`, `stats` and `now` read what the other handles write. For code that should only
    /// look (a status page, an exporter); see [Read-only ledgers](super#read-only-ledgers).
    ///
    /// ```
    /// use qupid::{ErrorKind, Key, Ledger, MemoryLedger, Offer, Policy};
    ///
    /// # fn main() -> qupid::Result<()> {
    /// # tokio::runtime::Builder::new_current_thread().build().expect("rt").block_on(async {
    /// let ledger = MemoryLedger::new();
    /// let view = ledger.read_only();
    /// let offers = [Offer::new(Key::new("orders/1")?)];
    /// let err = view.offer(&Policy::default(), &offers).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::ReadOnly);
    /// ledger.offer(&Policy::default(), &offers).await?;
    /// assert_eq!(view.stats().await?.queued, 1);
    /// # Ok::<(), qupid::Error>(()) })
    /// # }
    /// ```
    pub fn read_only(&self) -> MemoryLedger {
        MemoryLedger {
            inner: Arc::clone(&self.inner),
            read_only: true,
        }
    }

    /// Whether this handle refuses writes (made by [`read_only`](MemoryLedger::read_only)).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// `Ok` unless this handle is read-only; `doing` names the refused call.
    fn writable(&self, doing: &str) -> Result<()> {
        if self.read_only {
            return Err(super::read_only_error("the memory ledger", doing));
        }
        Ok(())
    }

    fn shard_of(&self, key: &str) -> usize {
        let h = self.inner.hasher.hash_one(key);
        // The high bits: the map itself uses the low ones.
        ((h >> 32) as usize) % self.inner.shards.len()
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave a slot half-written (every transition
        // writes plain fields after its checks), so a poisoned lock is safe to take over.
        self.inner.shards[shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn next_token(&self) -> u64 {
        self.inner.tokens.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now().0
    }

    /// Runs `f` on each item with its shard locked, visiting each shard once.
    fn each<I, R>(
        &self,
        items: &[I],
        key: impl Fn(&I) -> &str,
        mut f: impl FnMut(&mut Shard, &I) -> R,
    ) -> Vec<R> {
        let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
        if items.len() == 1 {
            let s = self.shard_of(key(&items[0]));
            out[0] = Some(f(&mut self.lock(s), &items[0]));
        } else {
            let mut order: Vec<(usize, usize)> = items
                .iter()
                .enumerate()
                .map(|(i, it)| (self.shard_of(key(it)), i))
                .collect();
            order.sort_unstable();
            let mut i = 0;
            while i < order.len() {
                let shard = order[i].0;
                let mut guard = self.lock(shard);
                while i < order.len() && order[i].0 == shard {
                    let idx = order[i].1;
                    out[idx] = Some(f(&mut guard, &items[idx]));
                    i += 1;
                }
            }
        }
        out.into_iter().flatten().collect()
    }

    fn offer_one(&self, shard: &mut Shard, policy: &Policy, offer: &Offer, now: u64) -> Offered {
        let lease_until = Timestamp(now).plus(policy.lease).0;
        let key = offer.key.as_str();
        let slot = match shard.map.entry_ref(key) {
            EntryRef::Vacant(v) => {
                let token = self.next_token();
                let mut slot = Slot {
                    state: State::Queued,
                    superseded: false,
                    attempts: 0,
                    abandoned: 0,
                    token,
                    at: lease_until,
                    extra: None,
                };
                slot.set_version(offer.version.as_ref());
                v.insert(slot);
                shard.counts.queued += 1;
                return accepted(token, lease_until, 0);
            }
            EntryRef::Occupied(o) => o.into_mut(),
        };
        let newer = slot.extra.as_ref().and_then(|e| e.newer.as_ref());
        if is_outdated(offer.version.as_ref(), slot.version(), newer) {
            return Offered::Outdated(slot.state);
        }
        // Work on a detached copy of the state so the shard's counters can be updated.
        let mut state = slot.state;
        if state.is_leased() {
            if now < slot.at {
                if policy.newer_versions == NewerVersions::Remember {
                    if let Some(w) = &offer.version {
                        if slot.version() != Some(w) {
                            slot.extra().newer = Some(w.clone());
                        }
                    }
                }
                return Offered::Duplicate(state);
            }
            // The holder's lease expired without an ending: it is abandoned.
            slot.abandoned = slot.abandoned.saturating_add(1);
            if policy.crash_cap > 0 && u32::from(slot.abandoned) >= policy.crash_cap {
                slot.at = now;
                slot.set_error(Some(ABANDONED));
                slot.take_newer();
                slot.state = State::Dead;
                shift(&mut shard.counts, state, State::Dead);
                state = State::Dead;
                // Falls through to the finished-key rules below.
            } else {
                let token = self.next_token();
                slot.token = token;
                slot.at = lease_until;
                slot.set_version(offer.version.as_ref());
                slot.take_newer();
                let attempts = u32::from(slot.attempts);
                if state == State::Running {
                    slot.state = State::Queued;
                    shift(&mut shard.counts, State::Running, State::Queued);
                }
                return accepted(token, lease_until, attempts);
            }
        }
        // Completed or Dead.
        let changed = match &offer.version {
            Some(w) => slot.version() != Some(w),
            None => false,
        };
        let blocks = policy
            .blocking(state)
            .blocks(Timestamp(slot.at), Timestamp(now));
        if !changed && !slot.superseded && blocks {
            return Offered::Duplicate(state);
        }
        let token = self.next_token();
        *slot = Slot {
            state: State::Queued,
            superseded: false,
            attempts: 0,
            abandoned: 0,
            token,
            at: lease_until,
            extra: None,
        };
        slot.set_version(offer.version.as_ref());
        shift(&mut shard.counts, state, State::Queued);
        accepted(token, lease_until, 0)
    }
}

fn accepted(token: u64, at: u64, attempts: u32) -> Offered {
    Offered::Accepted(Lease {
        token: Token(token),
        expires_at: Timestamp(at),
        attempts,
    })
}

/// Finds the slot held under `claim`, or says why not.
fn held<'a>(map: &'a mut HashMap<Box<str>, Slot>, claim: &Claim) -> Result<&'a mut Slot, Refused> {
    match map.get_mut(claim.key.as_str()) {
        Some(slot) if slot.token == claim.token.0 => Ok(slot),
        _ => Err(Refused::LeaseLost),
    }
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLedger")
            .field("shards", &self.inner.shards.len())
            .field("clock", &self.inner.clock)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl Ledger for MemoryLedger {
    async fn offer(&self, policy: &Policy, offers: &[Offer]) -> Result<Vec<Offered>> {
        self.writable("offer")?;
        let now = self.now_ms();
        Ok(self.each(
            offers,
            |o| o.key.as_str(),
            |shard, o| self.offer_one(shard, policy, o, now),
        ))
    }

    async fn offer_and_start(&self, policy: &Policy, offers: &[Offer]) -> Result<Vec<Offered>> {
        self.writable("offer_and_start")?;
        let now = self.now_ms();
        Ok(self.each(
            offers,
            |o| o.key.as_str(),
            |shard, o| match self.offer_one(shard, policy, o, now) {
                Offered::Accepted(mut lease) => {
                    // offer_one left the key Queued under this lease, in this locked shard.
                    if let Some(slot) = shard.map.get_mut(o.key.as_str()) {
                        slot.attempts = slot.attempts.saturating_add(1);
                        slot.state = State::Running;
                        lease.attempts = u32::from(slot.attempts);
                        shift(&mut shard.counts, State::Queued, State::Running);
                    }
                    Offered::Accepted(lease)
                }
                duplicate => duplicate,
            },
        ))
    }

    async fn start(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> Result<Vec<Result<Started, Refused>>> {
        self.writable("start")?;
        let now = Timestamp(self.now_ms());
        Ok(self.each(
            claims,
            |c| c.key.as_str(),
            |shard, c| {
                let slot = held(&mut shard.map, c)?;
                if slot.state != State::Queued {
                    return Err(Refused::WrongState(slot.state));
                }
                slot.attempts = slot.attempts.saturating_add(1);
                slot.at = now.plus(policy.lease).0;
                slot.state = State::Running;
                let started = Started {
                    attempt: u32::from(slot.attempts),
                    expires_at: Timestamp(slot.at),
                };
                shift(&mut shard.counts, State::Queued, State::Running);
                Ok(started)
            },
        ))
    }

    async fn renew(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> Result<Vec<Result<Timestamp, Refused>>> {
        self.writable("renew")?;
        let now = Timestamp(self.now_ms());
        Ok(self.each(
            claims,
            |c| c.key.as_str(),
            |shard, c| {
                let slot = held(&mut shard.map, c)?;
                if !slot.state.is_leased() {
                    return Err(Refused::WrongState(slot.state));
                }
                slot.at = now.plus(policy.lease).0;
                Ok(Timestamp(slot.at))
            },
        ))
    }

    async fn complete(&self, claims: &[Claim]) -> Result<Vec<Result<Done, Refused>>> {
        self.writable("complete")?;
        let now = self.now_ms();
        Ok(self.each(
            claims,
            |c| c.key.as_str(),
            |shard, c| {
                let slot = held(&mut shard.map, c)?;
                if slot.state != State::Running {
                    return Err(Refused::WrongState(slot.state));
                }
                let newer = slot.take_newer();
                let superseded = newer.is_some_and(|n| slot.version() != Some(&n));
                slot.superseded = superseded;
                slot.at = now;
                slot.state = State::Completed;
                shift(&mut shard.counts, State::Running, State::Completed);
                Ok(Done { superseded })
            },
        ))
    }

    async fn fail(
        &self,
        policy: &Policy,
        failures: &[Failure],
    ) -> Result<Vec<Result<Failed, Refused>>> {
        self.writable("fail")?;
        let now = Timestamp(self.now_ms());
        Ok(self.each(
            failures,
            |f| f.claim.key.as_str(),
            |shard, f| {
                let slot = held(&mut shard.map, &f.claim)?;
                if slot.state != State::Running {
                    return Err(Refused::WrongState(slot.state));
                }
                slot.set_error(Some(&f.error));
                let attempts = u32::from(slot.attempts);
                let (to, out) = if attempts >= policy.max_attempts.min(u32::from(u16::MAX)) {
                    slot.at = now.0;
                    slot.take_newer();
                    (State::Dead, Failed::Dead { attempts })
                } else {
                    slot.at = now.plus(policy.lease).0;
                    (State::Queued, Failed::Retry { attempts })
                };
                slot.state = to;
                shift(&mut shard.counts, State::Running, to);
                Ok(out)
            },
        ))
    }

    async fn release(&self, claims: &[Claim]) -> Result<Vec<Result<(), Refused>>> {
        self.writable("release")?;
        Ok(self.each(
            claims,
            |c| c.key.as_str(),
            |shard, c| {
                let slot = held(&mut shard.map, c)?;
                if !slot.state.is_leased() {
                    return Err(Refused::WrongState(slot.state));
                }
                let state = slot.state;
                shard.map.remove(c.key.as_str());
                *shard.counts.count_mut(state) -= 1;
                Ok(())
            },
        ))
    }

    async fn remove(&self, keys: &[Key], force: bool) -> Result<Vec<Removed>> {
        self.writable("remove")?;
        Ok(self.each(
            keys,
            |k| k.as_str(),
            |shard, k| {
                let Some(slot) = shard.map.get(k.as_str()) else {
                    return Removed::NotFound;
                };
                let state = slot.state;
                if state.is_leased() && !force {
                    return Removed::Leased(state);
                }
                shard.map.remove(k.as_str());
                *shard.counts.count_mut(state) -= 1;
                Removed::Removed
            },
        ))
    }

    async fn retry(&self, keys: &[Key]) -> Result<Vec<Retried>> {
        self.writable("retry")?;
        Ok(self.each(
            keys,
            |k| k.as_str(),
            |shard, k| {
                let Some(slot) = shard.map.get(k.as_str()) else {
                    return Retried::NotFound;
                };
                if slot.state != State::Dead {
                    return Retried::NotDead(slot.state);
                }
                shard.map.remove(k.as_str());
                shard.counts.dead -= 1;
                Retried::Retried
            },
        ))
    }

    async fn purge(&self, retention: &Retention) -> Result<Purged> {
        self.writable("purge")?;
        let now = Timestamp(self.now_ms());
        let mut purged = Purged::default();
        for (state, keep, n) in [
            (State::Completed, retention.completed, &mut purged.completed),
            (State::Dead, retention.dead, &mut purged.dead),
        ] {
            if keep.is_forever() {
                continue;
            }
            *n = self.purge_state(state, keep, now);
        }
        Ok(purged)
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>> {
        let shard = self.lock(self.shard_of(key.as_str()));
        Ok(shard
            .map
            .get(key.as_str())
            .and_then(|s| s.record(key.as_str())))
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        let limit = query.limit.max(1);
        let after = query.after.as_ref().map(Key::as_str);
        let mut records: Vec<Record> = Vec::new();
        for i in 0..self.inner.shards.len() {
            let shard = self.lock(i);
            for (k, slot) in shard.map.iter() {
                if slot.state == query.state && after.is_none_or(|a| &**k > a) {
                    if let Some(r) = slot.record(k) {
                        records.push(r);
                    }
                }
            }
            // Keep memory bounded by the page size while scanning.
            if records.len() > limit * 2 {
                records.sort_unstable_by(|a, b| a.key.cmp(&b.key));
                records.truncate(limit + 1);
            }
        }
        records.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let next = if records.len() > limit {
            records.truncate(limit);
            records.last().map(|r| r.key.clone())
        } else {
            None
        };
        Ok(Page { records, next })
    }

    async fn stats(&self) -> Result<Stats> {
        let now = self.now_ms();
        let mut total = Stats::default();
        for i in 0..self.inner.shards.len() {
            let shard = self.lock(i);
            let c = shard.counts;
            for s in State::ALL {
                *total.count_mut(s) += c.count(s);
            }
            if c.queued + c.running > 0 {
                total.expired += shard
                    .map
                    .values()
                    .filter(|s| s.state.is_leased() && now >= s.at)
                    .count() as u64;
            }
        }
        Ok(total)
    }

    async fn now(&self) -> Result<Timestamp> {
        Ok(Timestamp(self.now_ms()))
    }

    /// In-process calls cost less than a hop between tasks: never worth grouping.
    fn groups_calls(&self) -> bool {
        true
    }
}

impl MemoryLedger {
    fn purge_state(&self, state: State, keep: Keep, now: Timestamp) -> u64 {
        let mut removed = 0;
        // By age: one pass, shard by shard.
        if let Some(age) = keep.max_age {
            for i in 0..self.inner.shards.len() {
                let mut shard = self.lock(i);
                let before = shard.map.len();
                shard
                    .map
                    .retain(|_, s| !(s.state == state && too_old(s.at, now, age)));
                let n = (before - shard.map.len()) as u64;
                *shard.counts.count_mut(state) -= n;
                removed += n;
            }
        }
        // By count: find the finish time of the newest `max_count`, then drop what is older.
        if let Some(max) = keep.max_count {
            let mut all: Vec<(u64, Box<str>)> = Vec::new();
            for i in 0..self.inner.shards.len() {
                let shard = self.lock(i);
                all.extend(
                    shard
                        .map
                        .iter()
                        .filter(|(_, s)| s.state == state)
                        .map(|(k, s)| (s.at, k.clone())),
                );
            }
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if all.len() > max {
                // Newest first; ties broken by key so every ledger purges the same records.
                all.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
                for (at, key) in all.drain(max..) {
                    let mut shard = self.lock(self.shard_of(&key));
                    if shard
                        .map
                        .get(&key)
                        .is_some_and(|s| s.state == state && s.at == at)
                    {
                        shard.map.remove(&key);
                        *shard.counts.count_mut(state) -= 1;
                        removed += 1;
                    }
                }
            }
        }
        removed
    }
}

fn too_old(at: u64, now: Timestamp, age: Duration) -> bool {
    now.since(Timestamp(at)) >= age
}
