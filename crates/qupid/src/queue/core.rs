//! The machinery shared by a queue and its jobs: the registry of held claims, the batched
//! ledger calls that end jobs, and the lease renewer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use hashbrown::HashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::ledger::{Claim, Done, Failed, Failure, Ledger, Refused, Started, State, Token};
use crate::observe::Counters;
use crate::policy::Policy;
use crate::Key;

/// What a job asks the ledger.
#[derive(Debug)]
pub(crate) enum Ask {
    Start,
    Complete,
    Fail(String),
    Release,
}

/// The ledger's answer to an [`Ask`].
#[derive(Debug)]
pub(crate) enum Answer {
    Started(Result<Started, Refused>),
    Done(Result<Done, Refused>),
    Failed(Result<Failed, Refused>),
    Released(Result<(), Refused>),
}

pub(crate) struct Op {
    pub(crate) ask: Ask,
    pub(crate) claim: Claim,
    pub(crate) reply: Option<oneshot::Sender<Result<Answer>>>,
}

/// When the leases of this process's claims run out by its own monotonic clock, less a
/// margin: a claim's lease was asked for when it was granted, or when a renewal round that
/// covered it was sent; it lasts nine tenths of the lease from then (the rest is a margin
/// for the time answers took and for clock drift). Past that, the ledger may have given the
/// key to another holder, so a job must not begin a save.
///
/// Counted from when calls were *sent*, so a slow answer only makes it earlier; by a
/// monotonic clock, so a process paused (SIGSTOP, a VM freeze) finds it passed on waking.
/// The renewer renews every claim in rounds, so one time per queue — that of the last round
/// that renewed every claim held when it began — stands for all of them: no per-job state.
#[derive(Debug)]
pub(crate) struct Renewals {
    base: Instant,
    /// Nanoseconds after `base` of the last full round's start; 0 before the first.
    last: AtomicU64,
    budget: Duration,
}

impl Renewals {
    pub(crate) fn new(lease: Duration) -> Self {
        Renewals {
            base: Instant::now(),
            last: AtomicU64::new(0),
            budget: lease - lease / 10,
        }
    }

    /// A round that began at `started` renewed every claim held then.
    fn record(&self, started: Instant) {
        let after = u64::try_from(started.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX);
        self.last.fetch_max(after, Ordering::AcqRel);
    }

    /// The deadline of a claim granted as `grant` says.
    pub(crate) fn deadline(&self, grant: Grant) -> Instant {
        let Grant {
            sent: granted,
            held,
        } = grant;
        let last = self.last.load(Ordering::Acquire);
        let round = self.base + Duration::from_nanos(last);
        // A round counts for claims held before it began (and so renewed by it).
        let asked = if last > 0 && held <= round {
            granted.max(round)
        } else {
            granted
        };
        asked + self.budget
    }
}

/// When a claim's lease was granted: when the offer was sent, and when this process began
/// holding the claim (its answer arrived).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grant {
    pub(crate) sent: Instant,
    pub(crate) held: Instant,
}

/// A claim this process holds, for the renewer and the gauges.
struct Held {
    token: Token,
    /// Queued or Running, as the ledger last answered.
    state: State,
    lost: CancellationToken,
}

/// Claims held by this process: renewed together, cancelled when lost. Sharded by key, so
/// publishers and workers seldom wait for each other.
///
/// The `queued` and `running` gauges follow this registry and nothing else: a claim enters
/// it when the ledger accepts a key, moves when the ledger answers a start or a failure, and
/// leaves it once, when the ledger answers that the key left this holder (completed, dead,
/// released, or taken over). However often a job's ending is asked, answered, or dropped
/// halfway, each claim moves the gauges exactly once each way.
pub(crate) struct Registry {
    shards: Box<[Mutex<HashMap<Key, Held>>]>,
    hasher: hashbrown::DefaultHashBuilder,
    pub(crate) counters: Arc<Counters>,
}

impl Registry {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        Registry {
            shards: (0..16).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            counters,
        }
    }

    fn lock(&self, key: &Key) -> std::sync::MutexGuard<'_, HashMap<Key, Held>> {
        use std::hash::BuildHasher;
        let i = (self.hasher.hash_one(key.as_str()) >> 40) as usize % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gauge(&self, state: State, by: i64) {
        match state {
            State::Running => self.counters.running.add(by),
            _ => self.counters.queued.add(by),
        }
    }

    /// Holds `claim`, in `state` (Queued or Running). A claim on the same key under another
    /// token is lost: the ledger gave the key to this newer lease.
    pub(crate) fn insert(&self, claim: &Claim, state: State, lost: CancellationToken) {
        let old = self.lock(&claim.key).insert(
            claim.key.clone(),
            Held {
                token: claim.token,
                state,
                lost,
            },
        );
        self.gauge(state, 1);
        if let Some(old) = old {
            self.gauge(old.state, -1);
            if old.token != claim.token {
                self.counters.lease_lost.add(1);
                old.lost.cancel();
            }
        }
    }

    /// Records that `claim`'s key is now in `state`, if the claim is still held.
    pub(crate) fn set(&self, claim: &Claim, state: State) {
        let mut held = self.lock(&claim.key);
        if let Some(h) = held.get_mut(&claim.key).filter(|h| h.token == claim.token) {
            if h.state != state {
                let was = std::mem::replace(&mut h.state, state);
                drop(held);
                self.gauge(was, -1);
                self.gauge(state, 1);
            }
        }
    }

    /// Forgets `claim` if it is still the one held for its key. Answers whether it was.
    pub(crate) fn remove(&self, claim: &Claim) -> bool {
        let mut held = self.lock(&claim.key);
        if held.get(&claim.key).is_none_or(|h| h.token != claim.token) {
            return false;
        }
        let state = held.remove(&claim.key).map(|h| h.state);
        drop(held);
        if let Some(state) = state {
            self.gauge(state, -1);
        }
        true
    }

    /// Forgets `claim`, counts the lost lease and tells its job, if it is still held.
    pub(crate) fn lose(&self, claim: &Claim) {
        let mut held = self.lock(&claim.key);
        if held.get(&claim.key).is_none_or(|h| h.token != claim.token) {
            return;
        }
        let h = held.remove(&claim.key);
        drop(held);
        if let Some(h) = h {
            tracing::warn!(key = %claim.key, token = %claim.token, "lease lost");
            self.gauge(h.state, -1);
            self.counters.lease_lost.add(1);
            h.lost.cancel();
        }
    }

    fn claims(&self) -> Vec<Claim> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let held = shard.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(held.iter().map(|(k, h)| Claim {
                key: k.clone(),
                token: h.token,
            }));
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// What a queue and all its jobs share. Jobs keep it alive; when the last one goes, the
/// ops channel closes and the ender task finishes what was asked, then stops.
pub(crate) struct Core {
    pub(crate) ops: mpsc::UnboundedSender<Op>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) lease: Duration,
    /// When the held claims' leases run out, by this process's clock.
    pub(crate) renewals: Arc<Renewals>,
    /// Set when the ledger groups calls itself: jobs then call it directly, without a hop
    /// through the batching task.
    pub(crate) direct: Option<Arc<dyn Exec>>,
    /// Stops the renewer when the last job and the queue are gone.
    pub(crate) _renewer: tokio_util::sync::DropGuard,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("held", &self.registry.len())
            .finish_non_exhaustive()
    }
}

impl Core {
    /// Sends `ask` for `claim` to the ender and waits for the answer, retrying transient
    /// ledger errors for up to half a lease (the claim is renewed meanwhile).
    pub(crate) async fn ask(&self, make: impl Fn() -> Ask, claim: &Claim) -> Result<Answer> {
        let deadline = tokio::time::Instant::now() + self.lease / 2;
        let mut pause = Duration::from_millis(20);
        loop {
            let (tx, rx) = oneshot::channel();
            let op = Op {
                ask: make(),
                claim: claim.clone(),
                reply: Some(tx),
            };
            match &self.direct {
                // An op with a waiter is never handed back for retrying.
                Some(exec) => drop(exec.apply(vec![op]).await),
                None => self.ops.send(op).map_err(|_| closed())?,
            }
            match rx.await.map_err(|_| closed())? {
                Err(e) if e.is_transient() && tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!(key = %claim.key, error = %e, "ledger call failed, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// Asks without waiting for the answer (a release from `Drop`, a completion).
    pub(crate) fn send_later(&self, ask: Ask, claim: Claim) {
        let _ = self.ops.send(Op {
            ask,
            claim,
            reply: None,
        });
    }
}

fn closed() -> Error {
    Error::new(
        crate::ErrorKind::Closed,
        "the queue's ledger task has stopped",
    )
}

/// Applies ops to the ledger and keeps the books (counters, registry). Object-safe, so the
/// jobs (which do not know the ledger's type) can call it directly.
pub(crate) trait Exec: Send + Sync + 'static {
    /// Applies `ops` in one ledger call per kind and answers each op's waiter. Answers the
    /// ops nobody waits for (completions sent ahead, releases from `Drop`) that failed with a
    /// transient error, for the caller to try again.
    fn apply(&self, ops: Vec<Op>) -> BoxFuture<'_, Vec<Op>>;
}

pub(crate) struct Executor<L> {
    pub(crate) ledger: Arc<L>,
    pub(crate) policy: Policy,
    pub(crate) registry: Arc<Registry>,
    pub(crate) counters: Arc<Counters>,
}

impl<L: Ledger> Exec for Executor<L> {
    fn apply(&self, ops: Vec<Op>) -> BoxFuture<'_, Vec<Op>> {
        Box::pin(self.apply_all(ops))
    }
}

impl<L: Ledger> Executor<L> {
    async fn apply_all(&self, ops: Vec<Op>) -> Vec<Op> {
        let mut again = Vec::new();
        let (ledger, policy, registry) = (&self.ledger, &self.policy, &self.registry);
        let (mut starts, mut completes, mut fails, mut releases) = (vec![], vec![], vec![], vec![]);
        for op in ops {
            match op.ask {
                Ask::Start => starts.push((op.claim, op.reply)),
                Ask::Complete => completes.push((op.claim, op.reply)),
                Ask::Fail(error) => fails.push((
                    Failure {
                        claim: op.claim,
                        error,
                    },
                    op.reply,
                )),
                Ask::Release => releases.push((op.claim, op.reply)),
            }
        }
        let c = &self.counters;
        if !starts.is_empty() {
            let claims: Vec<Claim> = starts.iter().map(|(c, _)| c.clone()).collect();
            let out = ledger.start(policy, &claims).await;
            let failed = answer(c, starts, out, |claim, r| {
                match &r {
                    Ok(_) => registry.set(claim, State::Running),
                    Err(refused) => lost(registry, claim, refused),
                }
                Answer::Started(r)
            });
            again.extend(failed.into_iter().map(|claim| Op {
                ask: Ask::Start,
                claim,
                reply: None,
            }));
        }
        if !completes.is_empty() {
            let claims: Vec<Claim> = completes.iter().map(|(c, _)| c.clone()).collect();
            let out = ledger.complete(&claims).await;
            let failed = answer(c, completes, out, |claim, r| {
                // Completed under this very token: only this job could have done it, so an
                // earlier try was applied and its answer lost (a server killed before it
                // replied). That is a completion. Only retries (which answer nobody) can meet
                // this, so not knowing whether it was superseded loses nothing.
                let r = match r {
                    Err(Refused::WrongState(State::Completed)) => Ok(Done { superseded: false }),
                    r => r,
                };
                match &r {
                    // Counted once per claim, however often the completion was asked.
                    Ok(_) => {
                        if registry.remove(claim) {
                            c.completed.add(1);
                        }
                    }
                    Err(refused) => lost(registry, claim, refused),
                }
                Answer::Done(r)
            });
            again.extend(failed.into_iter().map(|claim| Op {
                ask: Ask::Complete,
                claim,
                reply: None,
            }));
        }
        if !fails.is_empty() {
            let items: Vec<Failure> = fails.iter().map(|(f, _)| f.clone()).collect();
            let out = ledger.fail(policy, &items).await;
            let failed = answer(c, fails, out, |f, r| {
                match &r {
                    Ok(Failed::Retry { .. }) => {
                        c.failed.add(1);
                        registry.set(&f.claim, State::Queued);
                    }
                    Ok(Failed::Dead { .. }) => {
                        if registry.remove(&f.claim) {
                            c.failed.add(1);
                            c.dead.add(1);
                        }
                    }
                    Err(refused) => lost(registry, &f.claim, refused),
                }
                Answer::Failed(r)
            });
            again.extend(failed.into_iter().map(|f| Op {
                ask: Ask::Fail(f.error),
                claim: f.claim,
                reply: None,
            }));
        }
        if !releases.is_empty() {
            let claims: Vec<Claim> = releases.iter().map(|(c, _)| c.clone()).collect();
            let out = ledger.release(&claims).await;
            let failed = answer(c, releases, out, |claim, r| {
                match &r {
                    Ok(()) => {
                        if registry.remove(claim) {
                            c.released.add(1);
                        }
                    }
                    Err(refused @ Refused::LeaseLost) => lost(registry, claim, refused),
                    // Already ended (a completion dropped halfway, then released from
                    // `Drop`): the ending's own answer moved the books.
                    Err(_) => {
                        registry.remove(claim);
                    }
                }
                Answer::Released(r)
            });
            again.extend(failed.into_iter().map(|claim| Op {
                ask: Ask::Release,
                claim,
                reply: None,
            }));
        }
        again
    }
}

/// Answers ops in batches: everything waiting goes to the ledger in one call per kind. Ops
/// nobody waits for are tried again while the ledger fails transiently (it may be restarting),
/// with a growing pause, for up to a minute or so; by then their leases have run out and the
/// keys will be offered again anyway.
pub(crate) async fn ender(exec: Arc<dyn Exec>, mut rx: mpsc::UnboundedReceiver<Op>) {
    const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
    let mut buf = Vec::with_capacity(1024);
    let mut again: Vec<Op> = Vec::new();
    let mut pause = Duration::from_millis(50);
    // When the ledger started failing the ops in `again`.
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut open = true;
    loop {
        if again.is_empty() {
            if !open || rx.recv_many(&mut buf, 1024).await == 0 {
                return;
            }
        } else {
            tokio::select! {
                n = rx.recv_many(&mut buf, 1024), if open => open = n > 0,
                _ = tokio::time::sleep(pause) => {}
            }
            buf.append(&mut again);
        }
        again = exec.apply(std::mem::take(&mut buf)).await;
        if again.is_empty() {
            pause = Duration::from_millis(50);
            failing_since = None;
        } else if failing_since
            .get_or_insert_with(tokio::time::Instant::now)
            .elapsed()
            > GIVE_UP_AFTER
        {
            tracing::warn!(
                ops = again.len(),
                "the ledger stayed unavailable: giving up on these; their keys are offered again when their leases expire"
            );
            again.clear();
            failing_since = None;
        } else {
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// A refused job: its lease is gone, or its record became unreadable (both end its hold on
/// the key), or it asked something its state does not allow.
fn lost(registry: &Registry, claim: &Claim, refused: &Refused) {
    match refused {
        Refused::LeaseLost => registry.lose(claim),
        Refused::Unreadable(u) => {
            registry.counters.unreadable(&claim.key, u);
            registry.lose(claim);
        }
        Refused::WrongState(_) => {}
    }
}

/// Sends each item's answer to its waiter, or the shared error to all of them.
fn answer<I, O>(
    c: &Counters,
    items: Vec<(I, Option<oneshot::Sender<Result<Answer>>>)>,
    out: Result<Vec<Result<O, Refused>>>,
    mut each: impl FnMut(&I, Result<O, Refused>) -> Answer,
) -> Vec<I> {
    match out {
        Ok(outs) => {
            c.ledger.ok();
            for ((item, reply), o) in items.into_iter().zip(outs) {
                let a = each(&item, o);
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(a));
                }
            }
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "ledger call failed");
            c.ledger_errors.add(1);
            c.ledger.failed(&e);
            let mut unanswered = Vec::new();
            for (item, reply) in items {
                match reply {
                    Some(reply) => {
                        let _ = reply.send(Err(e.share()));
                    }
                    None if e.is_transient() => unanswered.push(item),
                    // Not worth retrying: the key stays leased until its lease expires.
                    None => {}
                }
            }
            unanswered
        }
    }
}

/// Renews every held claim every third of a lease, in batches, until the core is gone.
pub(crate) async fn renewer<L: Ledger>(
    ledger: L,
    policy: Policy,
    registry: Arc<Registry>,
    counters: Arc<Counters>,
    renewals: Arc<Renewals>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(policy.lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let started = Instant::now();
        let claims = registry.claims();
        let mut whole = true;
        for chunk in claims.chunks(1000) {
            match ledger.renew(&policy, chunk).await {
                Ok(out) => {
                    counters.ledger.ok();
                    for (claim, r) in chunk.iter().zip(out) {
                        if let Err(refused) = r {
                            lost(&registry, claim, &refused);
                        }
                    }
                }
                Err(e) => {
                    whole = false;
                    counters.ledger_errors.add(1);
                    counters.ledger.failed(&e);
                    tracing::warn!(error = %e, claims = chunk.len(), "renewing leases failed")
                }
            }
        }
        if whole {
            renewals.record(started);
        }
    }
}
