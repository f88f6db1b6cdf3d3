//! The model-based test: random operation sequences run against a ledger and against
//! [`Model`], a plain reference implementation of the state machine, compared after every
//! step (outcome, every key's record, and `stats`, expired leases included).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use qupid::clock::Timestamp;
use qupid::ledger::rules::{decide, Answer, Event, Facts, Write};
use qupid::ledger::{Claim, Failed, Failure, Offered, Refused, Removed, Retried, State, Token};
use qupid::{Blocking, Keep, Key, LedgerAdmin, NewerVersions, Offer, Policy, Retention, Version};

use crate::Fixture;

const KEYS: [&str; 3] = ["a", "b", "c"];
/// The version pool, in stored form: none, two opaque versions, three ordered ones
/// (`Version::ordered(1)` to `(3)`). A case draws from part of it ([`Versions`]).
const VERSIONS: [Option<&str>; 6] = [
    None,
    Some("v1"),
    Some("v2"),
    Some("\u{1}o00000000000000000001"),
    Some("\u{1}o00000000000000000002"),
    Some("\u{1}o00000000000000000003"),
];
/// Every lease in the model test lasts this many ticks.
const LEASE: u64 = 10;

/// One step of a random sequence. `k` indexes the key pool, `v` the version pool; `stale`
/// uses the key's previous token instead of its latest.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum Op {
    /// Offer key `k` with version `v` (and start it at once, with `start`).
    Offer { k: usize, v: usize, start: bool },
    /// Start key `k` with its latest token (or a stale one).
    Start { k: usize, stale: bool },
    /// Renew key `k`.
    Renew { k: usize, stale: bool },
    /// Complete key `k`.
    Complete { k: usize, stale: bool },
    /// Fail key `k`.
    Fail { k: usize, stale: bool },
    /// Release key `k`.
    Release { k: usize, stale: bool },
    /// Remove key `k`.
    Remove { k: usize, force: bool },
    /// Retry key `k`.
    Retry { k: usize },
    /// Purge with one of a few retention rules.
    Purge { rule: usize },
    /// Move the clock forward by this many ticks.
    Advance { ticks: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    prop_oneof![
        4 => (k.clone(), 0..VERSIONS.len(), any::<bool>())
            .prop_map(|(k, v, start)| Op::Offer { k, v, start }),
        3 => (k.clone(), prop::bool::weighted(0.15)).prop_map(|(k, stale)| Op::Start { k, stale }),
        1 => (k.clone(), prop::bool::weighted(0.2)).prop_map(|(k, stale)| Op::Renew { k, stale }),
        3 => (k.clone(), prop::bool::weighted(0.15)).prop_map(|(k, stale)| Op::Complete { k, stale }),
        2 => (k.clone(), prop::bool::weighted(0.15)).prop_map(|(k, stale)| Op::Fail { k, stale }),
        1 => (k.clone(), prop::bool::weighted(0.2)).prop_map(|(k, stale)| Op::Release { k, stale }),
        1 => (k.clone(), any::<bool>()).prop_map(|(k, force)| Op::Remove { k, force }),
        1 => k.prop_map(|k| Op::Retry { k }),
        1 => (0..3usize).prop_map(|rule| Op::Purge { rule }),
        3 => prop_oneof![Just(1u32), Just(3), Just(6), Just(11)].prop_map(|ticks| Op::Advance { ticks }),
    ]
}

fn blocking() -> impl Strategy<Value = Blocking> {
    prop_oneof![
        Just(Blocking::Forever),
        Just(Blocking::Never),
        Just(Blocking::For(Duration::from_secs(5)))
    ]
}

/// Which versions a case offers.
#[derive(Debug, Clone, Copy)]
enum Versions {
    /// None, or opaque ones.
    Opaque,
    /// None, or ordered ones.
    Ordered,
    /// Any: opaque and ordered versions of one key meet.
    Mixed,
}

impl Versions {
    /// The version an offer's `v` (an index into the whole pool) stands for in this case.
    fn pick(self, v: usize) -> Option<&'static str> {
        match self {
            Versions::Opaque => VERSIONS[v % 3],
            Versions::Ordered => [VERSIONS[0], VERSIONS[3], VERSIONS[4], VERSIONS[5]][v % 4],
            Versions::Mixed => VERSIONS[v],
        }
    }
}

/// The random policy of one case, in ticks (windows are scaled to the fixture's tick).
#[derive(Debug, Clone)]
pub struct Settings {
    max_attempts: u32,
    crash_cap: u32,
    completed: Blocking,
    dead: Blocking,
    remember: bool,
    versions: Versions,
}

fn settings() -> impl Strategy<Value = Settings> {
    let versions = prop_oneof![
        Just(Versions::Opaque),
        Just(Versions::Ordered),
        Just(Versions::Mixed)
    ];
    (
        1..4u32,
        0..4u32,
        blocking(),
        blocking(),
        any::<bool>(),
        versions,
    )
        .prop_map(
            |(max_attempts, crash_cap, completed, dead, remember, versions)| Settings {
                max_attempts,
                crash_cap,
                completed,
                dead,
                remember,
                versions,
            },
        )
}

fn scale(b: Blocking, tick: Duration) -> Blocking {
    match b {
        Blocking::For(d) => Blocking::For(tick * d.as_secs() as u32),
        other => other,
    }
}

/// The policy of a case, with `tick` as the unit of time: leases of [`LEASE`] ticks.
fn settings_policy(s: &Settings, tick: Duration) -> Policy {
    let mut policy = Policy::default();
    policy.lease = tick * LEASE as u32;
    policy.max_attempts = s.max_attempts;
    policy.crash_cap = s.crash_cap;
    policy.completed = scale(s.completed, tick);
    policy.dead = scale(s.dead, tick);
    policy.newer_versions = if s.remember {
        NewerVersions::Remember
    } else {
        NewerVersions::Ignore
    };
    policy
}

fn retention(rule: usize, tick: Duration) -> Retention {
    match rule {
        0 => Retention {
            completed: Keep::younger_than(tick * 5),
            dead: Keep::FOREVER,
        },
        1 => Retention {
            completed: Keep::FOREVER,
            dead: Keep::younger_than(tick * 5),
        },
        _ => Retention {
            completed: Keep::newest(1),
            dead: Keep::newest(1),
        },
    }
}

/// A record of the reference model. Times are in ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MRecord {
    state: State,
    version: Option<Version>,
    newer: Option<Version>,
    attempts: u32,
    abandoned: u32,
    token: u64,
    /// Lease expiry while leased, finish time once finished.
    at: u64,
    error: Option<String>,
    superseded: bool,
}

impl MRecord {
    fn facts(&self) -> Facts<'_> {
        Facts {
            state: self.state,
            superseded: self.superseded,
            attempts: self.attempts,
            abandoned: self.abandoned,
            token: Token::new(self.token),
            at: Timestamp::from_millis(self.at),
            version: self.version.as_ref(),
            newer: self.newer.as_ref(),
            error: self.error.as_deref(),
        }
    }

    fn of(record: &Facts<'_>, token: u64) -> MRecord {
        MRecord {
            state: record.state,
            version: record.version.cloned(),
            newer: record.newer.cloned(),
            attempts: record.attempts,
            abandoned: record.abandoned,
            token,
            at: record.at.as_millis(),
            error: record.error.map(str::to_owned),
            superseded: record.superseded,
        }
    }
}

/// The reference model: a map of records moved by the library's own rule book,
/// [`qupid::ledger::rules::decide`], on a clock of ticks. A ledger that departs from it
/// departs from the rules.
#[derive(Debug, Default)]
pub struct Model {
    /// Records by key.
    pub records: BTreeMap<&'static str, MRecord>,
    now: u64,
    tokens: u64,
}

/// A ledger-independent view of one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Accepted, with the attempts so far.
    Accepted(u32),
    /// A duplicate of a key in this state.
    Duplicate(State),
    /// An outdated version offered for a key in this state.
    Outdated(State),
    /// An unreadable record (the model never has one: a ledger answering it departs).
    Unreadable(String),
    /// An answer of a kind this kit does not know (a newer qupid): a ledger answering it
    /// departs.
    Unknown(String),
    /// Refused.
    Refused(Refused),
    /// Started, with the attempt number.
    Started(u32),
    /// Renewed.
    Renewed,
    /// Completed; superseded or not.
    Done(bool),
    /// Failed; retry or dead, with attempts.
    Failed(bool, u32),
    /// Released.
    Released,
    /// A remove outcome.
    Removed(Removed),
    /// A retry outcome.
    Retried(Retried),
    /// Purged counts.
    Purged(u64, u64),
    /// The clock moved.
    Advanced,
}

impl Out {
    /// The model's view of the rules' answer.
    fn of(answer: Answer) -> Out {
        match answer {
            Answer::Accepted { attempts, .. } => Out::Accepted(attempts),
            Answer::Duplicate(st) => Out::Duplicate(st),
            Answer::Outdated(st) => Out::Outdated(st),
            Answer::Started(s) => Out::Started(s.attempt),
            Answer::Renewed(_) => Out::Renewed,
            Answer::Done(d) => Out::Done(d.superseded),
            Answer::Failed(Failed::Retry { attempts }) => Out::Failed(true, attempts),
            Answer::Failed(Failed::Dead { attempts }) => Out::Failed(false, attempts),
            Answer::Released => Out::Released,
            Answer::Refused(r) => Out::Refused(r),
            Answer::Removed(r) => Out::Removed(r),
            Answer::Retried(r) => Out::Retried(r),
        }
    }
}

impl Model {
    /// The policy of `s` on the model's clock: one tick is one millisecond.
    fn policy(s: &Settings) -> Policy {
        settings_policy(s, Duration::from_millis(1))
    }

    /// Applies `event` to key `k` by the rules: the outcome, and the token of a new lease.
    fn event(&mut self, s: &Settings, k: &'static str, event: &Event<'_>) -> (Out, Option<u64>) {
        let before = self.records.get(k);
        let d = decide(
            before.map(MRecord::facts).as_ref(),
            event,
            &Self::policy(s),
            Timestamp::from_millis(self.now),
        );
        let answer = d.answer;
        let (record, issued) = match d.write {
            Write::Keep => return (Out::of(answer), None),
            Write::Delete => (None, None),
            Write::Put { record, new_token } => {
                let token = match (new_token, before) {
                    (true, _) => {
                        self.tokens += 1;
                        self.tokens
                    }
                    (false, Some(r)) => r.token,
                    (false, None) => 0,
                };
                (
                    Some(MRecord::of(&record, token)),
                    new_token.then_some(token),
                )
            }
        };
        match record {
            Some(r) => self.records.insert(k, r),
            None => self.records.remove(k),
        };
        (Out::of(answer), issued)
    }

    fn apply(&mut self, s: &Settings, op: &Op, token: u64) -> Out {
        let token = Token::new(token);
        let event = match *op {
            Op::Start { .. } => Event::Start { token },
            Op::Renew { .. } => Event::Renew { token },
            Op::Complete { .. } => Event::Complete { token },
            Op::Fail { .. } => Event::Fail {
                token,
                error: "boom",
            },
            Op::Release { .. } => Event::Release { token },
            Op::Remove { force, .. } => Event::Remove { force },
            Op::Retry { .. } => Event::Retry,
            Op::Purge { rule } => {
                let (c, d) = self.purge(rule);
                return Out::Purged(c, d);
            }
            Op::Advance { ticks } => {
                self.now += u64::from(ticks);
                return Out::Advanced;
            }
            Op::Offer { .. } => unreachable!("offers go through Model::event"),
        };
        let k = match *op {
            Op::Start { k, .. }
            | Op::Renew { k, .. }
            | Op::Complete { k, .. }
            | Op::Fail { k, .. }
            | Op::Release { k, .. }
            | Op::Remove { k, .. }
            | Op::Retry { k } => KEYS[k],
            _ => unreachable!("handled above"),
        };
        self.event(s, k, &event).0
    }

    fn purge(&mut self, rule: usize) -> (u64, u64) {
        let mut counts = (0, 0);
        for st in [State::Completed, State::Dead] {
            let n = match rule {
                0 | 1 => {
                    let target = if rule == 0 {
                        State::Completed
                    } else {
                        State::Dead
                    };
                    if st != target {
                        continue;
                    }
                    let now = self.now;
                    let old: Vec<_> = self
                        .records
                        .iter()
                        .filter(|(_, r)| r.state == st && now - r.at >= 5)
                        .map(|(k, _)| *k)
                        .collect();
                    old.iter().for_each(|k| {
                        self.records.remove(k);
                    });
                    old.len() as u64
                }
                _ => {
                    let mut all: Vec<_> = self
                        .records
                        .iter()
                        .filter(|(_, r)| r.state == st)
                        .map(|(k, r)| (r.at, *k))
                        .collect();
                    all.sort_by(|a, b| b.cmp(a));
                    let drop: Vec<_> = all.iter().skip(1).map(|(_, k)| *k).collect();
                    drop.iter().for_each(|k| {
                        self.records.remove(k);
                    });
                    drop.len() as u64
                }
            };
            if st == State::Completed {
                counts.0 += n;
            } else {
                counts.1 += n;
            }
        }
        counts
    }
}

/// Runs `cases` random sequences against fresh fixtures from `make` and the model, and
/// panics with the smallest failing sequence found.
pub fn check<L, F, Fut>(make: F, cases: u32)
where
    L: LedgerAdmin,
    F: Fn() -> Fut,
    Fut: Future<Output = Fixture<L>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (settings(), prop::collection::vec(op(), 1..60));
    let result = runner.run(&strategy, |(s, ops)| {
        rt.block_on(async { run_case(make().await, &s, &ops).await })
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("the ledger departed from the model: {e}");
    }
}

/// The tokens a key was issued, on the ledger and in the model.
#[derive(Default, Clone, Copy)]
struct Tokens {
    latest: Option<(Token, u64)>,
    previous: Option<(Token, u64)>,
}

async fn run_case<L: LedgerAdmin>(fx: Fixture<L>, s: &Settings, ops: &[Op]) -> Result<(), String> {
    let tick = fx.tick;
    let policy = settings_policy(s, tick);
    let mut model = Model::default();
    let mut tokens = [Tokens::default(); KEYS.len()];
    let l = &fx.ledger;
    let key = |k: usize| Key::new(KEYS[k]).expect("valid");
    let err = |e: qupid::Error| format!("ledger error: {e}");
    for (step, op) in ops.iter().enumerate() {
        let pick = |k: usize, stale: bool| -> (Token, u64) {
            let t = tokens[k];
            if stale {
                t.previous.unwrap_or((Token::new(0), 0))
            } else {
                t.latest.unwrap_or((Token::new(0), 0))
            }
        };
        let (got, want) = match *op {
            Op::Offer { k, v, start } => {
                let version = s.versions.pick(v);
                let o = Offer {
                    key: key(k),
                    version: version.map(|v| Version::new(v).expect("valid")),
                };
                let offers = [o];
                let got = if start {
                    l.offer_and_start(&policy, &offers).await
                } else {
                    l.offer(&policy, &offers).await
                };
                let [o] = offers;
                let got = got.map_err(err)?.remove(0);
                let event = Event::Offer {
                    version: o.version.as_ref(),
                    start,
                };
                let (want, model_token) = model.event(s, KEYS[k], &event);
                let got = match got {
                    Offered::Accepted(lease) => {
                        if let Some(mt) = model_token {
                            tokens[k].previous = tokens[k].latest;
                            tokens[k].latest = Some((lease.token, mt));
                        }
                        Out::Accepted(lease.attempts)
                    }
                    Offered::Duplicate(st) => Out::Duplicate(st),
                    Offered::Outdated(st) => Out::Outdated(st),
                    Offered::Unreadable(u) => Out::Unreadable(u.found().to_owned()),
                    other => Out::Unknown(format!("{other:?}")),
                };
                (got, want)
            }
            Op::Start { k, stale }
            | Op::Renew { k, stale }
            | Op::Complete { k, stale }
            | Op::Fail { k, stale }
            | Op::Release { k, stale } => {
                let (lt, mt) = pick(k, stale);
                let c = [Claim {
                    key: key(k),
                    token: lt,
                }];
                let got = match op {
                    Op::Start { .. } => l
                        .start(&policy, &c)
                        .await
                        .map_err(err)?
                        .remove(0)
                        .map(|s| Out::Started(s.attempt)),
                    Op::Renew { .. } => l
                        .renew(&policy, &c)
                        .await
                        .map_err(err)?
                        .remove(0)
                        .map(|_| Out::Renewed),
                    Op::Complete { .. } => l
                        .complete(&c)
                        .await
                        .map_err(err)?
                        .remove(0)
                        .map(|d| Out::Done(d.superseded)),
                    Op::Fail { .. } => {
                        let f = [Failure {
                            claim: c[0].clone(),
                            error: "boom".into(),
                        }];
                        l.fail(&policy, &f)
                            .await
                            .map_err(err)?
                            .remove(0)
                            .map(|f| match f {
                                qupid::ledger::Failed::Retry { attempts } => {
                                    Out::Failed(true, attempts)
                                }
                                qupid::ledger::Failed::Dead { attempts } => {
                                    Out::Failed(false, attempts)
                                }
                            })
                    }
                    _ => l
                        .release(&c)
                        .await
                        .map_err(err)?
                        .remove(0)
                        .map(|()| Out::Released),
                };
                (got.unwrap_or_else(Out::Refused), model.apply(s, op, mt))
            }
            Op::Remove { k, force } => {
                let got = l.remove(&[key(k)], force).await.map_err(err)?.remove(0);
                (Out::Removed(got), model.apply(s, op, 0))
            }
            Op::Retry { k } => {
                let got = l.retry(&[key(k)]).await.map_err(err)?.remove(0);
                (Out::Retried(got), model.apply(s, op, 0))
            }
            Op::Purge { rule } => {
                let p = l.purge(&retention(rule, tick)).await.map_err(err)?;
                (Out::Purged(p.completed, p.dead), model.apply(s, op, 0))
            }
            Op::Advance { ticks } => {
                fx.advance(ticks).await;
                (Out::Advanced, model.apply(s, op, 0))
            }
        };
        if got != want {
            return Err(format!(
                "step {step} {op:?}: ledger answered {got:?}, model {want:?}"
            ));
        }
        compare(l, &model, step, op).await?;
    }
    Ok(())
}

async fn compare<L: LedgerAdmin>(l: &L, model: &Model, step: usize, op: &Op) -> Result<(), String> {
    // States, then expired leases: a lease is valid while the clock is before its expiry.
    let mut counts = [0u64; 5];
    counts[4] = model
        .records
        .values()
        .filter(|r| r.state.is_leased() && model.now >= r.at)
        .count() as u64;
    for k in KEYS {
        let got = l
            .get(&Key::new(k).expect("valid"))
            .await
            .map_err(|e| e.to_string())?;
        let want = model.records.get(k);
        let view =
            |st: State, v: Option<&str>, n: Option<&str>, a: u32, ab: u32, e: bool, sup: bool| {
                format!(
                "{st} v={v:?} newer={n:?} attempts={a} abandoned={ab} error={e} superseded={sup}"
            )
            };
        let got = got.map(|r| {
            view(
                r.state,
                r.version.as_ref().map(Version::as_str),
                r.newer_version.as_ref().map(Version::as_str),
                r.attempts,
                r.abandoned,
                r.last_error.is_some(),
                r.superseded,
            )
        });
        let want = want.map(|r| {
            counts[r.state as usize] += 1;
            view(
                r.state,
                r.version.as_ref().map(Version::as_str),
                r.newer.as_ref().map(Version::as_str),
                r.attempts,
                r.abandoned,
                r.error.is_some(),
                r.superseded,
            )
        });
        if got != want {
            return Err(format!(
                "after step {step} {op:?}, key {k:?}: ledger {got:?}, model {want:?}"
            ));
        }
    }
    let st = l.stats().await.map_err(|e| e.to_string())?;
    let got = [st.queued, st.running, st.completed, st.dead, st.expired];
    if got != counts {
        return Err(format!(
            "after step {step} {op:?}: stats {got:?}, model {counts:?}"
        ));
    }
    Ok(())
}
