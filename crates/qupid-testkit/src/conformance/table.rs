//! The table of the rules: every starting situation × event × policy setting × lease
//! timing, each row's expected outcome computed by [`decide`] from the record the ledger
//! holds, checked against what the ledger answers and what it writes.
//!
//! Redis and PostgreSQL restate the rules on the server (scripts, statements) and SQLite's
//! guarded writes restate some of them in SQL; this table is what keeps every restatement
//! equal to the one rule book.

use std::collections::HashMap;

use qupid::clock::Timestamp;
use qupid::ledger::rules::{decide, Answer, Decision, Event, Facts, Write};
use qupid::ledger::{
    Claim, Failed, Failure, ListQuery, Offered, Record, Refused, Removed, Retried, State, Token,
};
use qupid::{Blocking, Key, LedgerAdmin, NewerVersions, Offer, Policy, Version};

use crate::Fixture;

/// How a row's key got where it is before its event, from absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Situation {
    Absent,
    /// Offered.
    Queued,
    /// Offered and started.
    Running,
    /// Running, with a newer version offered meanwhile.
    RunningNewer,
    /// Running, then failed with attempts left: Queued again, one attempt made.
    Retrying,
    Completed,
    /// Completed after a newer version was offered in flight.
    Superseded,
    /// Failed on its last attempt.
    Dead,
}

const SITUATIONS: [Situation; 8] = [
    Situation::Absent,
    Situation::Queued,
    Situation::Running,
    Situation::RunningNewer,
    Situation::Retrying,
    Situation::Completed,
    Situation::Superseded,
    Situation::Dead,
];

impl Situation {
    /// The state the situation leaves the key in.
    fn state(self) -> Option<State> {
        match self {
            Situation::Absent => None,
            Situation::Queued | Situation::Retrying => Some(State::Queued),
            Situation::Running | Situation::RunningNewer => Some(State::Running),
            Situation::Completed | Situation::Superseded => Some(State::Completed),
            Situation::Dead => Some(State::Dead),
        }
    }
}

/// The version the key is set up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unversioned,
    Opaque,
    Ordered,
}

impl Kind {
    fn version(self) -> Option<Version> {
        match self {
            Kind::Unversioned => None,
            Kind::Opaque => Some(opaque("a")),
            Kind::Ordered => Some(Version::ordered(5)),
        }
    }

    /// The newer version offered in flight (situations RunningNewer and Superseded).
    fn newer(self) -> Version {
        match self {
            Kind::Ordered => Version::ordered(6),
            Kind::Unversioned | Kind::Opaque => opaque("b"),
        }
    }
}

fn opaque(v: &str) -> Version {
    Version::new(v).expect("a valid version")
}

/// The version an event offers, relative to the key's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OfferOf {
    Nothing,
    Same,
    Opaque,
    Older,
    Newer,
}

impl OfferOf {
    fn version(self, kind: Kind) -> Option<Version> {
        match self {
            OfferOf::Nothing => None,
            OfferOf::Same => kind.version(),
            OfferOf::Opaque => Some(opaque("c")),
            OfferOf::Older => Some(Version::ordered(4)),
            OfferOf::Newer => Some(Version::ordered(7)),
        }
    }
}

/// A row's event. `stale` claims carry a token the key never had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    Offer { of: u8, start: bool },
    Start { stale: bool },
    Renew { stale: bool },
    Complete { stale: bool },
    Fail { stale: bool },
    Release { stale: bool },
    Remove { force: bool },
    Retry,
}

const OFFERS: [OfferOf; 5] = [
    OfferOf::Nothing,
    OfferOf::Same,
    OfferOf::Opaque,
    OfferOf::Older,
    OfferOf::Newer,
];

fn steps() -> Vec<Step> {
    let mut steps = Vec::new();
    for of in 0..OFFERS.len() as u8 {
        for start in [false, true] {
            steps.push(Step::Offer { of, start });
        }
    }
    for stale in [false, true] {
        steps.extend([
            Step::Start { stale },
            Step::Renew { stale },
            Step::Complete { stale },
            Step::Fail { stale },
            Step::Release { stale },
        ]);
    }
    steps.extend([
        Step::Remove { force: false },
        Step::Remove { force: true },
        Step::Retry,
    ]);
    steps
}

/// Which call carries a step: the steps of one call go in one batch.
fn call(step: Step) -> Step {
    match step {
        Step::Offer { start, .. } => Step::Offer { of: 0, start },
        Step::Start { .. } => Step::Start { stale: false },
        Step::Renew { .. } => Step::Renew { stale: false },
        Step::Complete { .. } => Step::Complete { stale: false },
        Step::Fail { .. } => Step::Fail { stale: false },
        Step::Release { .. } => Step::Release { stale: false },
        other => other,
    }
}

/// Ticks between the end of the set-up and a row's event: within the finished keys'
/// window; past the window with the lease still valid; past the lease.
const TIMINGS: [u32; 3] = [1, 7, 11];
/// Leases last 10 ticks, windows 5.
const LEASE: u32 = 10;
const WINDOW: u32 = 5;

/// A policy setting of the table.
#[derive(Debug, Clone, Copy)]
struct Setting {
    /// 0: blocking forever, 1: never, 2: for [`WINDOW`] ticks (Completed and Dead alike).
    blocking: u8,
    crash_cap: u32,
    max_attempts: u32,
    remember: bool,
}

fn settings() -> Vec<Setting> {
    let mut all = Vec::new();
    for blocking in 0..3 {
        for crash_cap in [0, 1, 2] {
            for max_attempts in [1, 2] {
                for remember in [false, true] {
                    all.push(Setting {
                        blocking,
                        crash_cap,
                        max_attempts,
                        remember,
                    });
                }
            }
        }
    }
    all
}

impl Setting {
    fn policy<L: LedgerAdmin>(&self, fx: &Fixture<L>) -> Policy {
        let blocking = match self.blocking {
            0 => Blocking::Forever,
            1 => Blocking::Never,
            _ => Blocking::For(fx.ticks(WINDOW)),
        };
        let mut p = fx.policy();
        p.lease = fx.ticks(LEASE);
        p.completed = blocking;
        p.dead = blocking;
        p.crash_cap = self.crash_cap;
        p.max_attempts = self.max_attempts;
        p.newer_versions = if self.remember {
            NewerVersions::Remember
        } else {
            NewerVersions::Ignore
        };
        p
    }
}

/// One row of the table.
#[derive(Debug, Clone)]
struct Row {
    situation: Situation,
    kind: Kind,
    timing: usize,
    step: Step,
    setting: usize,
    key: Key,
}

/// What a ledger answered, without times (checked on the record instead).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Accepted(u32),
    Duplicate(State),
    Outdated(State),
    Unreadable,
    /// An answer of a kind this kit does not know (a newer qupid).
    Unknown(String),
    Started(u32),
    Renewed,
    Done(bool),
    Failed(Failed),
    Released,
    Refused(Refused),
    Removed(Removed),
    Retried(Retried),
}

impl Seen {
    fn of(answer: &Answer) -> Seen {
        match answer {
            Answer::Accepted { attempts, .. } => Seen::Accepted(*attempts),
            Answer::Duplicate(st) => Seen::Duplicate(*st),
            Answer::Outdated(st) => Seen::Outdated(*st),
            Answer::Started(s) => Seen::Started(s.attempt),
            Answer::Renewed(_) => Seen::Renewed,
            Answer::Done(d) => Seen::Done(d.superseded),
            Answer::Failed(f) => Seen::Failed(*f),
            Answer::Released => Seen::Released,
            Answer::Refused(r) => Seen::Refused(r.clone()),
            Answer::Removed(r) => Seen::Removed(*r),
            Answer::Retried(r) => Seen::Retried(*r),
        }
    }

    fn offered(o: &Offered) -> Seen {
        match o {
            Offered::Accepted(lease) => Seen::Accepted(lease.attempts),
            Offered::Duplicate(st) => Seen::Duplicate(*st),
            Offered::Outdated(st) => Seen::Outdated(*st),
            Offered::Unreadable(_) => Seen::Unreadable,
            other => Seen::Unknown(format!("{other:?}")),
        }
    }

    fn claimed<T>(r: Result<T, Refused>, ok: impl FnOnce(T) -> Seen) -> Seen {
        match r {
            Ok(v) => ok(v),
            Err(refused) => Seen::Refused(refused),
        }
    }
}

/// A record as the rules see it.
fn facts(r: &Record) -> Facts<'_> {
    Facts {
        state: r.state,
        superseded: r.superseded,
        attempts: r.attempts,
        abandoned: r.abandoned,
        token: r.token,
        at: r
            .expires_at
            .or(r.finished_at)
            .unwrap_or(Timestamp::from_millis(0)),
        version: r.version.as_ref(),
        newer: r.newer_version.as_ref(),
        error: r.last_error.as_deref(),
    }
}

/// Every record of the ledger, by key.
async fn records<L: LedgerAdmin>(l: &L) -> HashMap<Key, Record> {
    let mut all = HashMap::new();
    for state in State::ALL {
        let mut q = ListQuery::new(state).limit(1000);
        loop {
            let page = l.list(&q).await.expect("list");
            for r in page.records {
                all.insert(r.key.clone(), r);
            }
            match page.next {
                Some(next) => q = q.after(next),
                None => break,
            }
        }
    }
    all
}

const CHUNK: usize = 500;

/// Every row of the table, on one fixture: the set-up of every row's situation, then each
/// row's event at its timing under its setting, each answer and each record written checked
/// against [`decide`] applied to the record the ledger held before the event (at the
/// ledger's clock read before and after the call: a row whose rule changes between the two
/// may follow either).
pub async fn every_transition_follows_the_rules<L: LedgerAdmin>(fx: Fixture<L>) {
    let l = &fx.ledger;
    let settings = settings();
    let policies: Vec<Policy> = settings.iter().map(|s| s.policy(&fx)).collect();
    let mut rows = Vec::new();
    for situation in SITUATIONS {
        let kinds: &[Kind] = if situation == Situation::Absent {
            &[Kind::Unversioned]
        } else {
            &[Kind::Unversioned, Kind::Opaque, Kind::Ordered]
        };
        for &kind in kinds {
            for timing in 0..TIMINGS.len() {
                for step in steps() {
                    for setting in 0..settings.len() {
                        let key = Key::new(format!("t{:06}", rows.len())).expect("a valid key");
                        rows.push(Row {
                            situation,
                            kind,
                            timing,
                            step,
                            setting,
                            key,
                        });
                    }
                }
            }
        }
    }
    set_up(&fx, &rows).await;
    let before = records(l).await;
    for row in &rows {
        assert_eq!(
            before.get(&row.key).map(|r| r.state),
            row.situation.state(),
            "the set-up of {row:?}"
        );
    }

    // Each row's call happened between these two readings of the ledger's clock.
    let mut clocks: Vec<Option<(Timestamp, Timestamp)>> = vec![None; rows.len()];
    let mut elapsed = 0;
    for (timing, &at) in TIMINGS.iter().enumerate() {
        fx.advance(at - elapsed).await;
        elapsed = at;
        for (setting, policy) in policies.iter().enumerate() {
            let mut calls: HashMap<Step, Vec<usize>> = HashMap::new();
            for (i, row) in rows.iter().enumerate() {
                if row.timing == timing && row.setting == setting {
                    calls.entry(call(row.step)).or_default().push(i);
                }
            }
            let mut calls: Vec<_> = calls.into_iter().collect();
            calls.sort_by_key(|(step, _)| format!("{step:?}"));
            for (step, members) in calls {
                for chunk in members.chunks(CHUNK) {
                    let now_before = l.now().await.expect("now");
                    let seen = run(l, policy, step, chunk, &rows, &before).await;
                    let now_after = l.now().await.expect("now");
                    for (&i, seen) in chunk.iter().zip(seen) {
                        let row = &rows[i];
                        let prior = before.get(&row.key);
                        let want = answers(row, prior, policy, [now_before, now_after])
                            .map(|a| Seen::of(&a));
                        assert!(
                            want.contains(&seen),
                            "{row:?} on {prior:?}: the ledger answered {seen:?}, the rules {:?}",
                            want[0]
                        );
                        clocks[i] = Some((now_before, now_after));
                    }
                }
            }
        }
    }

    let after = records(l).await;
    for (i, row) in rows.iter().enumerate() {
        let (now_before, now_after) = clocks[i].expect("every row ran");
        let prior = before.get(&row.key);
        let got = after.get(&row.key);
        let policy = &policies[row.setting];
        let offered = offered_version(row);
        let event = event_of(row, prior, offered.as_ref());
        let decide_at = |now| decide(prior.map(facts).as_ref(), &event, policy, now);
        let (early, late) = (decide_at(now_before), decide_at(now_after));
        let span = now_after.as_millis().saturating_sub(now_before.as_millis());
        let fits = |d: &Decision<'_>| written(prior, got, &d.write, &early, &late, span);
        assert!(
            fits(&early) || fits(&late),
            "{row:?}: the ledger went from {prior:?} to {got:?}, the rules wrote {:?}",
            early.write
        );
    }
}

/// What the rules answer for `row` on `prior` under `policy`, at each clock reading.
fn answers(
    row: &Row,
    prior: Option<&Record>,
    policy: &Policy,
    nows: [Timestamp; 2],
) -> [Answer; 2] {
    let offered = offered_version(row);
    let event = event_of(row, prior, offered.as_ref());
    nows.map(|now| decide(prior.map(facts).as_ref(), &event, policy, now).answer)
}

/// Whether the ledger's record `got` after the event is what `write` makes of `prior`: every
/// field equal, the token new where the rules ask for one, times between what the rules
/// wrote at the clock before and after the call. When only one of the two readings writes
/// (the rule changed during the call, `span` ms long), the ledger wrote at some moment of
/// the call: its time may be up to `span` before the late writing's (or after the early
/// one's).
fn written(
    prior: Option<&Record>,
    got: Option<&Record>,
    write: &Write<'_>,
    early: &Decision<'_>,
    late: &Decision<'_>,
    span: u64,
) -> bool {
    match (write, got) {
        (Write::Keep, got) => got == prior,
        (Write::Delete, got) => got.is_none(),
        (Write::Put { record, new_token }, Some(got)) => {
            let token_ok = match prior {
                Some(p) if *new_token => got.token > p.token,
                Some(p) => got.token == p.token,
                None => *new_token,
            };
            let at = |d: &Decision<'_>| match d.write {
                Write::Put { record, .. } => Some(record.at),
                _ => None,
            };
            let ms = |t: Timestamp| t.as_millis();
            let (lo, hi) = match (at(early), at(late)) {
                (Some(a), Some(b)) => (ms(a).min(ms(b)), ms(a).max(ms(b))),
                (Some(a), None) => (ms(a), ms(a).saturating_add(span)),
                (None, Some(b)) => (ms(b).saturating_sub(span), ms(b)),
                (None, None) => (ms(record.at), ms(record.at)),
            };
            let g = facts(got);
            token_ok
                && ms(g.at) >= lo
                && ms(g.at) <= hi
                && g.state == record.state
                && g.superseded == record.superseded
                && g.attempts == record.attempts
                && g.abandoned == record.abandoned
                && g.version == record.version
                && g.newer == record.newer
                && g.error == record.error
        }
        (Write::Put { .. }, None) => false,
    }
}

fn offered_version(row: &Row) -> Option<Version> {
    match row.step {
        Step::Offer { of, .. } => OFFERS[usize::from(of)].version(row.kind),
        _ => None,
    }
}

/// The claim token of a row: the key's own, or one it never had.
fn token_of(row: &Row, prior: Option<&Record>) -> Token {
    let own = prior.map_or(Token::new(1), |r| r.token);
    let stale = matches!(
        row.step,
        Step::Start { stale: true }
            | Step::Renew { stale: true }
            | Step::Complete { stale: true }
            | Step::Fail { stale: true }
            | Step::Release { stale: true }
    );
    if stale {
        Token::new(own.get() + 10_000_000)
    } else {
        own
    }
}

const ERROR: &str = "boom";

fn event_of<'a>(row: &Row, prior: Option<&Record>, offered: Option<&'a Version>) -> Event<'a> {
    let token = token_of(row, prior);
    match row.step {
        Step::Offer { start, .. } => Event::Offer {
            version: offered,
            start,
        },
        Step::Start { .. } => Event::Start { token },
        Step::Renew { .. } => Event::Renew { token },
        Step::Complete { .. } => Event::Complete { token },
        Step::Fail { .. } => Event::Fail {
            token,
            error: ERROR,
        },
        Step::Release { .. } => Event::Release { token },
        Step::Remove { force } => Event::Remove { force },
        Step::Retry => Event::Retry,
    }
}

/// Runs the call `step` for the rows `members`, in one batch: one answer per row, in order.
async fn run<L: LedgerAdmin>(
    l: &L,
    policy: &Policy,
    step: Step,
    members: &[usize],
    rows: &[Row],
    before: &HashMap<Key, Record>,
) -> Vec<Seen> {
    let claims: Vec<Claim> = members
        .iter()
        .map(|&i| Claim {
            key: rows[i].key.clone(),
            token: token_of(&rows[i], before.get(&rows[i].key)),
        })
        .collect();
    let keys: Vec<Key> = members.iter().map(|&i| rows[i].key.clone()).collect();
    let fail = "a ledger call of the table";
    match step {
        Step::Offer { start, .. } => {
            let offers: Vec<Offer> = members
                .iter()
                .map(|&i| Offer {
                    key: rows[i].key.clone(),
                    version: offered_version(&rows[i]),
                })
                .collect();
            let out = if start {
                l.offer_and_start(policy, &offers).await
            } else {
                l.offer(policy, &offers).await
            };
            out.expect(fail).iter().map(Seen::offered).collect()
        }
        Step::Start { .. } => (l.start(policy, &claims).await.expect(fail).into_iter())
            .map(|r| Seen::claimed(r, |s| Seen::Started(s.attempt)))
            .collect(),
        Step::Renew { .. } => (l.renew(policy, &claims).await.expect(fail).into_iter())
            .map(|r| Seen::claimed(r, |_| Seen::Renewed))
            .collect(),
        Step::Complete { .. } => (l.complete(&claims).await.expect(fail).into_iter())
            .map(|r| Seen::claimed(r, |d| Seen::Done(d.superseded)))
            .collect(),
        Step::Fail { .. } => {
            let failures: Vec<Failure> = claims
                .into_iter()
                .map(|claim| Failure {
                    claim,
                    error: ERROR.to_owned(),
                })
                .collect();
            (l.fail(policy, &failures).await.expect(fail).into_iter())
                .map(|r| Seen::claimed(r, Seen::Failed))
                .collect()
        }
        Step::Release { .. } => (l.release(&claims).await.expect(fail).into_iter())
            .map(|r| Seen::claimed(r, |()| Seen::Released))
            .collect(),
        Step::Remove { force } => (l.remove(&keys, force).await.expect(fail).into_iter())
            .map(Seen::Removed)
            .collect(),
        Step::Retry => (l.retry(&keys).await.expect(fail).into_iter())
            .map(Seen::Retried)
            .collect(),
    }
}

/// Puts every row's key in its situation, at one time, with a policy that blocks forever,
/// remembers newer versions and never buries abandoned keys.
async fn set_up<L: LedgerAdmin>(fx: &Fixture<L>, rows: &[Row]) {
    let l = &fx.ledger;
    let mut p = fx.policy();
    p.lease = fx.ticks(LEASE);
    p.completed = Blocking::Forever;
    p.dead = Blocking::Forever;
    p.crash_cap = 0;
    p.max_attempts = 3;
    p.newer_versions = NewerVersions::Remember;
    let mut last = p.clone();
    last.max_attempts = 1;

    let of = |pick: &dyn Fn(Situation) -> bool| -> Vec<&Row> {
        rows.iter().filter(|r| pick(r.situation)).collect()
    };
    let offers = |rows: &[&Row], newer: bool| -> Vec<Offer> {
        rows.iter()
            .map(|r| Offer {
                key: r.key.clone(),
                version: if newer {
                    Some(r.kind.newer())
                } else {
                    r.kind.version()
                },
            })
            .collect()
    };
    let mut tokens: HashMap<Key, Token> = HashMap::new();
    let mut accepted = |out: Vec<Offered>, rows: &[&Row]| {
        for (o, r) in out.into_iter().zip(rows) {
            match o {
                Offered::Accepted(lease) => {
                    tokens.insert(r.key.clone(), lease.token);
                }
                other => panic!("set-up of {r:?}: the offer was {other:?}"),
            }
        }
    };
    let queued = of(&|s| s == Situation::Queued);
    for chunk in queued.chunks(CHUNK) {
        accepted(
            l.offer(&p, &offers(chunk, false)).await.expect("offer"),
            chunk,
        );
    }
    let running = of(&|s| !matches!(s, Situation::Absent | Situation::Queued));
    for chunk in running.chunks(CHUNK) {
        let out = l.offer_and_start(&p, &offers(chunk, false)).await;
        accepted(out.expect("offer_and_start"), chunk);
    }
    let claims = |rows: &[&Row]| -> Vec<Claim> {
        rows.iter()
            .map(|r| Claim {
                key: r.key.clone(),
                token: tokens[&r.key],
            })
            .collect()
    };
    let newer = of(&|s| matches!(s, Situation::RunningNewer | Situation::Superseded));
    for chunk in newer.chunks(CHUNK) {
        for o in l.offer(&p, &offers(chunk, true)).await.expect("offer") {
            assert_eq!(
                o,
                Offered::Duplicate(State::Running),
                "set-up of a newer version"
            );
        }
    }
    for (situation, policy) in [(Situation::Retrying, &p), (Situation::Dead, &last)] {
        for chunk in of(&|s| s == situation).chunks(CHUNK) {
            let failures: Vec<Failure> = claims(chunk)
                .into_iter()
                .map(|claim| Failure {
                    claim,
                    error: ERROR.to_owned(),
                })
                .collect();
            for r in l.fail(policy, &failures).await.expect("fail") {
                r.expect("set-up: fail");
            }
        }
    }
    let done = of(&|s| matches!(s, Situation::Completed | Situation::Superseded));
    for chunk in done.chunks(CHUNK) {
        for r in l.complete(&claims(chunk)).await.expect("complete") {
            r.expect("set-up: complete");
        }
    }
}
