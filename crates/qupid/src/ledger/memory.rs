//! The in-memory ledger: the default, for one process.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hashbrown::hash_map::EntryRef;
use hashbrown::{DefaultHashBuilder, HashMap};

use super::rules::{decide, Answer, Event, Facts, Write, MAX_COUNT};
use super::types::*;
use super::{Ledger, LedgerAdmin};
use crate::clock::{Clock, MonotonicClock, Timestamp};
use crate::error::Result;
use crate::key::{Key, Offer, Version};
use crate::policy::{Keep, Policy, Retention};

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
/// A retained finished key costs a small fixed record plus its length (see the README's
/// benchmark). `list` scans every shard, so it costs time in proportion to the number of
/// keys. So does `stats` while any key is in flight: its counts per state are kept as keys
/// move, but the expired leases are counted by walking the records of each shard that holds
/// a leased key. Indexing leases by expiry would cost every transition instead.
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
    /// The record as the rules see it, borrowed.
    fn facts(&self) -> Facts<'_> {
        let extra = self.extra.as_deref();
        Facts {
            state: self.state,
            superseded: self.superseded,
            attempts: u32::from(self.attempts),
            abandoned: u32::from(self.abandoned),
            token: Token(self.token),
            at: Timestamp(self.at),
            version: extra.and_then(|e| e.version.as_ref()),
            newer: extra.and_then(|e| e.newer.as_ref()),
            error: extra.and_then(|e| e.error.as_deref()),
        }
    }

    /// A slot holding `record` under `token`.
    fn new(record: &Facts<'_>, token: u64) -> Slot {
        let mut slot = Slot {
            state: record.state,
            superseded: record.superseded,
            attempts: small(record.attempts),
            abandoned: small(record.abandoned),
            token,
            at: record.at.0,
            extra: None,
        };
        if record.version.is_some() || record.newer.is_some() || record.error.is_some() {
            slot.extra = Some(Box::new(Extra {
                version: record.version.cloned(),
                newer: record.newer.cloned(),
                error: record.error.map(str::to_owned),
            }));
        }
        slot
    }

    /// Writes `record` over this slot: the plain fields, and the rare ones only where
    /// `change` says they changed.
    fn apply(&mut self, record: &Plain, change: Option<Change>, token: Option<u64>) {
        self.state = record.state;
        self.superseded = record.superseded;
        self.attempts = small(record.attempts);
        self.abandoned = small(record.abandoned);
        self.at = record.at.0;
        if let Some(token) = token {
            self.token = token;
        }
        if let Some(change) = change {
            self.extra =
                (change.version.is_some() || change.newer.is_some() || change.error.is_some())
                    .then(|| {
                        Box::new(Extra {
                            version: change.version,
                            newer: change.newer,
                            error: change.error,
                        })
                    });
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
    /// use qupid::{ErrorKind, Key, Ledger, LedgerAdmin, MemoryLedger, Offer, Policy};
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

    fn offers(&self, policy: &Policy, offers: &[Offer], start: bool) -> Vec<Offered> {
        let now = Timestamp(self.now_ms());
        self.each(
            offers,
            |o| o.key.as_str(),
            |shard, o| {
                let event = Event::Offer {
                    version: o.version.as_ref(),
                    start,
                };
                let (answer, token) = self.apply(shard, o.key.as_str(), &event, policy, now);
                answer.into_offered(token)
            },
        )
    }

    /// Applies the claim event `event` makes of each claim's token, answering by `answer`.
    fn claims<T>(
        &self,
        policy: &Policy,
        claims: &[Claim],
        event: impl Fn(Token) -> Event<'static>,
        answer: impl Fn(Answer) -> Result<T, Refused>,
    ) -> Vec<Result<T, Refused>> {
        let now = Timestamp(self.now_ms());
        self.each(
            claims,
            |c| c.key.as_str(),
            |shard, c| {
                answer(
                    self.apply(shard, c.key.as_str(), &event(c.token), policy, now)
                        .0,
                )
            },
        )
    }

    /// Applies the administration `event` to each key, answering by `answer`.
    fn keys<T>(&self, keys: &[Key], event: &Event<'_>, answer: impl Fn(Answer) -> T) -> Vec<T> {
        let now = Timestamp(self.now_ms());
        let policy = Policy::default();
        self.each(
            keys,
            |k| k.as_str(),
            |shard, k| answer(self.apply(shard, k.as_str(), event, &policy, now).0),
        )
    }

    /// Applies `event` to `key`'s record in its locked shard, by [`decide`]: answers what
    /// the rules answer, with the token of the new lease if the event made one.
    fn apply(
        &self,
        shard: &mut Shard,
        key: &str,
        event: &Event<'_>,
        policy: &Policy,
        now: Timestamp,
    ) -> (Answer, Token) {
        match shard.map.entry_ref(key) {
            EntryRef::Vacant(v) => {
                let d = decide(None, event, policy, now);
                let mut token = Token(0);
                if let Write::Put { record, new_token } = d.write {
                    token = Token(if new_token { self.next_token() } else { 0 });
                    v.insert(Slot::new(&record, token.0));
                    *shard.counts.count_mut(record.state) += 1;
                }
                (d.answer, token)
            }
            EntryRef::Occupied(mut o) => {
                let slot = o.get_mut();
                let from = slot.state;
                let mut token = Token(slot.token);
                // Read what changes while the slot is borrowed by the rules' view of it.
                let (answer, write) = {
                    let facts = slot.facts();
                    let d = decide(Some(&facts), event, policy, now);
                    let write = match d.write {
                        Write::Keep => None,
                        Write::Delete => Some(None),
                        Write::Put { record, new_token } => Some(Some((
                            Plain::of(&record),
                            Change::of(&facts, &record),
                            new_token,
                        ))),
                    };
                    (d.answer, write)
                };
                match write {
                    None => {}
                    Some(None) => {
                        o.remove();
                        *shard.counts.count_mut(from) -= 1;
                    }
                    Some(Some((record, change, new_token))) => {
                        let issued = new_token.then(|| self.next_token());
                        slot.apply(&record, change, issued);
                        if let Some(t) = issued {
                            token = Token(t);
                        }
                        if from != record.state {
                            shift(&mut shard.counts, from, record.state);
                        }
                    }
                }
                (answer, token)
            }
        }
    }
}

/// The fixed-size fields of a record to write.
struct Plain {
    state: State,
    superseded: bool,
    attempts: u32,
    abandoned: u32,
    at: Timestamp,
}

impl Plain {
    fn of(record: &Facts<'_>) -> Plain {
        Plain {
            state: record.state,
            superseded: record.superseded,
            attempts: record.attempts,
            abandoned: record.abandoned,
            at: record.at,
        }
    }
}

/// The rare fields of a record to write, owned.
struct Change {
    version: Option<Version>,
    newer: Option<Version>,
    error: Option<String>,
}

impl Change {
    /// The rare fields of `after`, if any differs from `before` (a field the rules left as
    /// it was is the same reference, so nothing is compared by value).
    fn of(before: &Facts<'_>, after: &Facts<'_>) -> Option<Change> {
        let same = same(before.version, after.version)
            && same(before.newer, after.newer)
            && same(before.error, after.error);
        (!same).then(|| Change {
            version: after.version.cloned(),
            newer: after.newer.cloned(),
            error: after.error.map(str::to_owned),
        })
    }
}

/// Whether two optional references are the same place (or both absent).
fn same<T: ?Sized>(a: Option<&T>, b: Option<&T>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        _ => false,
    }
}

/// A count as a slot stores it (the rules keep counts at most [`MAX_COUNT`], which fits).
fn small(n: u32) -> u16 {
    u16::try_from(n.min(MAX_COUNT)).unwrap_or(u16::MAX)
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
        Ok(self.offers(policy, offers, false))
    }

    async fn offer_and_start(&self, policy: &Policy, offers: &[Offer]) -> Result<Vec<Offered>> {
        self.writable("offer_and_start")?;
        Ok(self.offers(policy, offers, true))
    }

    async fn start(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> Result<Vec<Result<Started, Refused>>> {
        self.writable("start")?;
        Ok(self.claims(
            policy,
            claims,
            |token| Event::Start { token },
            Answer::into_started,
        ))
    }

    async fn renew(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> Result<Vec<Result<Timestamp, Refused>>> {
        self.writable("renew")?;
        Ok(self.claims(
            policy,
            claims,
            |token| Event::Renew { token },
            Answer::into_renewed,
        ))
    }

    async fn complete(&self, claims: &[Claim]) -> Result<Vec<Result<Done, Refused>>> {
        self.writable("complete")?;
        let policy = Policy::default();
        Ok(self.claims(
            &policy,
            claims,
            |token| Event::Complete { token },
            Answer::into_done,
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
                let event = Event::Fail {
                    token: f.claim.token,
                    error: &f.error,
                };
                let key = f.claim.key.as_str();
                self.apply(shard, key, &event, policy, now).0.into_failed()
            },
        ))
    }

    async fn release(&self, claims: &[Claim]) -> Result<Vec<Result<(), Refused>>> {
        self.writable("release")?;
        let policy = Policy::default();
        Ok(self.claims(
            &policy,
            claims,
            |token| Event::Release { token },
            Answer::into_released,
        ))
    }

    /// In-process calls cost less than a hop between tasks: never worth grouping.
    fn groups_calls(&self) -> bool {
        true
    }
}

impl LedgerAdmin for MemoryLedger {
    async fn remove(&self, keys: &[Key], force: bool) -> Result<Vec<Removed>> {
        self.writable("remove")?;
        Ok(self.keys(keys, &Event::Remove { force }, Answer::into_removed))
    }

    async fn retry(&self, keys: &[Key]) -> Result<Vec<Retried>> {
        self.writable("retry")?;
        Ok(self.keys(keys, &Event::Retry, Answer::into_retried))
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
            *n = self.purge_state(state, keep, now).await;
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
}

impl MemoryLedger {
    /// Purges `state` shard by shard, yielding to the runtime between shards (and every
    /// [`PURGE_YIELD`] keys removed by count), so that a large purge does not hold a
    /// runtime thread, or other tasks of a current-thread runtime, for its whole length.
    async fn purge_state(&self, state: State, keep: Keep, now: Timestamp) -> u64 {
        let mut removed = 0;
        // By age: one pass, shard by shard.
        if let Some(age) = keep.max_age {
            for i in 0..self.inner.shards.len() {
                {
                    let mut shard = self.lock(i);
                    let before = shard.map.len();
                    shard
                        .map
                        .retain(|_, s| !(s.state == state && too_old(s.at, now, age)));
                    let n = (before - shard.map.len()) as u64;
                    *shard.counts.count_mut(state) -= n;
                    removed += n;
                }
                tokio::task::yield_now().await;
            }
        }
        // By count: find the finish time of the newest `max_count`, then drop what is older.
        if let Some(max) = keep.max_count {
            let mut all: Vec<(u64, Box<str>)> = Vec::new();
            for i in 0..self.inner.shards.len() {
                {
                    let shard = self.lock(i);
                    all.extend(
                        shard
                            .map
                            .iter()
                            .filter(|(_, s)| s.state == state)
                            .map(|(k, s)| (s.at, k.clone())),
                    );
                }
                tokio::task::yield_now().await;
            }
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if all.len() > max {
                // Newest first; ties broken by key so every ledger purges the same records.
                all.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
                for (i, (at, key)) in all.drain(max..).enumerate() {
                    {
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
                    if i % PURGE_YIELD == PURGE_YIELD - 1 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
        removed
    }
}

/// Keys a purge by count removes between two yields to the runtime.
const PURGE_YIELD: usize = 4096;

fn too_old(at: u64, now: Timestamp, age: Duration) -> bool {
    now.since(Timestamp(at)) >= age
}
