//! A ledger wrapper that fails on demand: an outage, the next N calls, or the answers of
//! completions it applied.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qupid::clock::Timestamp;
use qupid::ledger::{
    Claim, Done, Failed, Failure, ListQuery, Offered, Page, Purged, Record, Refused, Removed,
    Retried, Started, Stats,
};
use qupid::{Error, ErrorKind, Key, Ledger, LedgerAdmin, Offer, Policy, Retention};

/// Wraps a ledger and makes its calls fail with [`ErrorKind::Unavailable`] (a transient
/// error, as from a server that is restarting) while an outage lasts or for the next N calls.
/// A failed call does not reach the inner ledger, except a completion whose answer is lost
/// ([`lose_completion_answers`](FaultyLedger::lose_completion_answers)). Clones share the switches.
///
/// [`Ledger::offer_and_start`] fails or goes through as one call, as it does in every ledger
/// of this crate; behind that one check it runs the trait's two-step default
/// ([`offer_then_start`](qupid::ledger::offer_then_start)) on the inner ledger, so the
/// conformance suite run on a `FaultyLedger` tests that default.
#[derive(Clone)]
pub struct FaultyLedger<L> {
    inner: L,
    switches: Arc<Switches>,
}

#[derive(Default)]
struct Switches {
    down: AtomicBool,
    fail_next: AtomicU64,
    /// Completions to apply and then answer with an error, as a server killed before replying.
    lose_completions: AtomicU64,
    failed: AtomicU64,
    groups_calls: Option<bool>,
    /// Milliseconds the hot-path calls wait after the inner ledger answered.
    answer_after_ms: AtomicU64,
    /// A fault no retry fixes: every call fails with this kind while it is set.
    broken: Mutex<Option<ErrorKind>>,
    /// Renewals fail (transiently) while set; other calls go through.
    no_renewals: AtomicBool,
}

impl<L: Ledger> FaultyLedger<L> {
    /// Wraps `inner`, working normally until told otherwise.
    pub fn new(inner: L) -> Self {
        FaultyLedger {
            inner,
            switches: Arc::default(),
        }
    }

    /// Wraps `inner` and claims it does (or does not) group calls itself, to exercise the
    /// queue's batching task (`false`) or its direct calls (`true`).
    pub fn grouping(inner: L, groups_calls: bool) -> Self {
        let switches = Switches {
            groups_calls: Some(groups_calls),
            ..Switches::default()
        };
        FaultyLedger {
            inner,
            switches: Arc::new(switches),
        }
    }

    /// Starts (`true`) or ends (`false`) an outage: every call fails while it lasts.
    pub fn set_down(&self, down: bool) {
        self.switches.down.store(down, Ordering::SeqCst);
    }

    /// Makes the next `n` calls fail.
    pub fn fail_next(&self, n: u64) {
        self.switches.fail_next.store(n, Ordering::SeqCst);
    }

    /// Makes the next `n` calls of `complete` reach the inner ledger and then fail, as when a
    /// server applies a call and is killed before it answers: the caller cannot tell it from
    /// a call that never arrived.
    pub fn lose_completion_answers(&self, n: u64) {
        self.switches.lose_completions.store(n, Ordering::SeqCst);
    }

    /// Makes the hot-path calls (offer, offer-and-start, start, renew, complete, fail,
    /// release) answer `delay` after the inner ledger applied them, as a slow network does:
    /// a caller that gives up meanwhile leaves the call applied. Zero answers at once.
    pub fn answer_after(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.switches.answer_after_ms.store(ms, Ordering::SeqCst);
    }

    /// Makes every call fail with an error of `kind` (say [`ErrorKind::Corrupt`], as for a
    /// damaged file), which no retry fixes, until called with `None`.
    pub fn break_with(&self, kind: Option<ErrorKind>) {
        *self
            .switches
            .broken
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = kind;
    }

    /// Makes renewals fail (as unavailable) while `stalled`, and only them: the leases of the
    /// queue's jobs then run out as if the process had been paused.
    pub fn stall_renewals(&self, stalled: bool) {
        self.switches.no_renewals.store(stalled, Ordering::SeqCst);
    }

    /// How many calls failed so far.
    pub fn failed(&self) -> u64 {
        self.switches.failed.load(Ordering::SeqCst)
    }

    /// The wrapped ledger.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    async fn slow(&self) {
        let ms = self.switches.answer_after_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    fn check(&self, call: &str) -> qupid::Result<()> {
        let s = &self.switches;
        let broken = *s.broken.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kind) = broken {
            s.failed.fetch_add(1, Ordering::SeqCst);
            return Err(Error::new(
                kind,
                format!("injected fault: {call} failed for good"),
            ));
        }
        let one_of_next = s
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if s.down.load(Ordering::SeqCst) || one_of_next {
            s.failed.fetch_add(1, Ordering::SeqCst);
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("injected fault: {call} failed"),
            ));
        }
        Ok(())
    }
}

impl<L: fmt::Debug> fmt::Debug for FaultyLedger<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyLedger")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<L: Ledger> Ledger for FaultyLedger<L> {
    async fn offer(&self, policy: &Policy, offers: &[Offer]) -> qupid::Result<Vec<Offered>> {
        self.check("offer")?;
        let out = self.inner.offer(policy, offers).await;
        self.slow().await;
        out
    }
    async fn start(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> qupid::Result<Vec<Result<Started, Refused>>> {
        self.check("start")?;
        let out = self.inner.start(policy, claims).await;
        self.slow().await;
        out
    }
    async fn offer_and_start(
        &self,
        policy: &Policy,
        offers: &[Offer],
    ) -> qupid::Result<Vec<Offered>> {
        self.check("offer_and_start")?;
        let out = qupid::ledger::offer_then_start(&self.inner, policy, offers).await;
        self.slow().await;
        out
    }
    async fn renew(
        &self,
        policy: &Policy,
        claims: &[Claim],
    ) -> qupid::Result<Vec<Result<Timestamp, Refused>>> {
        self.check("renew")?;
        if self.switches.no_renewals.load(Ordering::SeqCst) {
            self.switches.failed.fetch_add(1, Ordering::SeqCst);
            return Err(Error::new(
                ErrorKind::Unavailable,
                "injected fault: renewals are stalled",
            ));
        }
        let out = self.inner.renew(policy, claims).await;
        self.slow().await;
        out
    }
    async fn complete(&self, claims: &[Claim]) -> qupid::Result<Vec<Result<Done, Refused>>> {
        self.check("complete")?;
        let out = self.inner.complete(claims).await?;
        let s = &self.switches;
        let lose = s
            .lose_completions
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lose {
            s.failed.fetch_add(1, Ordering::SeqCst);
            return Err(Error::new(
                ErrorKind::Unavailable,
                "injected fault: complete was applied, its answer lost",
            ));
        }
        self.slow().await;
        Ok(out)
    }
    async fn fail(
        &self,
        policy: &Policy,
        failures: &[Failure],
    ) -> qupid::Result<Vec<Result<Failed, Refused>>> {
        self.check("fail")?;
        let out = self.inner.fail(policy, failures).await;
        self.slow().await;
        out
    }
    async fn release(&self, claims: &[Claim]) -> qupid::Result<Vec<Result<(), Refused>>> {
        self.check("release")?;
        let out = self.inner.release(claims).await;
        self.slow().await;
        out
    }
    fn groups_calls(&self) -> bool {
        self.switches
            .groups_calls
            .unwrap_or_else(|| self.inner.groups_calls())
    }
}

impl<L: LedgerAdmin> LedgerAdmin for FaultyLedger<L> {
    async fn remove(&self, keys: &[Key], force: bool) -> qupid::Result<Vec<Removed>> {
        self.check("remove")?;
        self.inner.remove(keys, force).await
    }
    async fn retry(&self, keys: &[Key]) -> qupid::Result<Vec<Retried>> {
        self.check("retry")?;
        self.inner.retry(keys).await
    }
    async fn purge(&self, retention: &Retention) -> qupid::Result<Purged> {
        self.check("purge")?;
        self.inner.purge(retention).await
    }
    async fn get(&self, key: &Key) -> qupid::Result<Option<Record>> {
        self.check("get")?;
        self.inner.get(key).await
    }
    async fn list(&self, query: &ListQuery) -> qupid::Result<Page> {
        self.check("list")?;
        self.inner.list(query).await
    }
    async fn stats(&self) -> qupid::Result<Stats> {
        self.check("stats")?;
        self.inner.stats().await
    }
    async fn now(&self) -> qupid::Result<Timestamp> {
        self.check("now")?;
        self.inner.now().await
    }
}
