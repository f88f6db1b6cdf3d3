//! The typed protocol between this ledger and its transition statements
//! ([`sql`](super::sql)): what each statement takes, by name, in the order of its `$n`
//! placeholders, and what each of its answer rows says, as a decision enum and named
//! values. Nothing else builds a transition's parameters or reads its answer rows.
//!
//! Every answer row has the columns `ord` (the item's place in the batch, from 1), `m` (the
//! decision code), `state` (the state the decision saw), `written` (whether the write
//! happened) and `found` (what an unreadable row holds), and, by statement, the values the
//! write returned, under the names of [`Answer`]'s fields.

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::decode::{corrupt, state};
use crate::error::{Error, Result};
use crate::ledger::types::{State, Unreadable};

/// Parameters of one statement, owned so a batch can be re-sent.
pub(super) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// `offer` and `offer_and_start`.
pub(super) struct OfferParams {
    /// `$1`: the keys.
    pub(super) keys: Vec<Vec<u8>>,
    /// `$2`: their versions (NULL: none).
    pub(super) versions: Vec<Option<Vec<u8>>>,
    /// `$3`: the lease, in ms.
    pub(super) lease_ms: i64,
    /// `$4`: the crash cap (0: none).
    pub(super) crash_cap: i64,
    /// `$5`: whether newer versions offered while a key is leased are remembered.
    pub(super) remember: bool,
    /// `$6`: how long a Completed record blocks, in ms (NULL: forever; 0: not at all).
    pub(super) completed_ms: Option<i64>,
    /// `$7`: the same for a Dead record.
    pub(super) dead_ms: Option<i64>,
}

impl OfferParams {
    pub(super) fn into_params(self) -> Params {
        vec![
            Box::new(self.keys),
            Box::new(self.versions),
            Box::new(self.lease_ms),
            Box::new(self.crash_cap),
            Box::new(self.remember),
            Box::new(self.completed_ms),
            Box::new(self.dead_ms),
        ]
    }
}

/// `start` and `renew` (with a lease), `complete` and `release` (without).
pub(super) struct ClaimParams {
    /// `$1`: the keys.
    pub(super) keys: Vec<Vec<u8>>,
    /// `$2`: the tokens their claims hold.
    pub(super) tokens: Vec<i64>,
    /// `$3`: the lease, in ms.
    pub(super) lease_ms: Option<i64>,
}

impl ClaimParams {
    pub(super) fn into_params(self) -> Params {
        let mut p: Params = vec![Box::new(self.keys), Box::new(self.tokens)];
        if let Some(lease) = self.lease_ms {
            p.push(Box::new(lease));
        }
        p
    }
}

/// `fail`.
pub(super) struct FailParams {
    /// `$1`: the keys.
    pub(super) keys: Vec<Vec<u8>>,
    /// `$2`: the tokens their claims hold.
    pub(super) tokens: Vec<i64>,
    /// `$3`: the errors, as text.
    pub(super) errors: Vec<Vec<u8>>,
    /// `$4`: the lease of a retry, in ms.
    pub(super) lease_ms: i64,
    /// `$5`: the attempts after which a key is Dead.
    pub(super) max_attempts: i64,
}

impl FailParams {
    pub(super) fn into_params(self) -> Params {
        vec![
            Box::new(self.keys),
            Box::new(self.tokens),
            Box::new(self.errors),
            Box::new(self.lease_ms),
            Box::new(self.max_attempts),
        ]
    }
}

/// `remove` (with `force`) and `retry` (without).
pub(super) struct KeyParams {
    /// `$1`: the keys.
    pub(super) keys: Vec<Vec<u8>>,
    /// `$2`: whether leased and unreadable records are removed too.
    pub(super) force: Option<bool>,
}

impl KeyParams {
    pub(super) fn into_params(self) -> Params {
        let mut p: Params = vec![Box::new(self.keys)];
        if let Some(force) = self.force {
            p.push(Box::new(force));
        }
        p
    }
}

/// What `offer` decided for an item (its `m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OfferDecision {
    /// 0: a duplicate; nothing to write.
    Duplicate,
    /// 1: no record: a new lease.
    Insert,
    /// 2: an expired lease: taken over with a new lease.
    Reclaim,
    /// 3: a finished record that does not block (or a new version): a new lease.
    Renew,
    /// 4: a lease abandoned too often: the key goes Dead.
    CrashCapped,
    /// 5: leased: the offered version is remembered as a newer one.
    Remember,
    /// 6: the row is unreadable; nothing to write.
    Unreadable,
    /// 7: the offered version is outdated; nothing to write.
    Outdated,
}

/// What a claim statement decided for an item (its `m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClaimDecision {
    /// 0: the claim holds and the state allows the operation: write.
    Go,
    /// 1: the token is not the key's, or there is no record.
    LeaseLost,
    /// 2: the state does not allow the operation.
    WrongState,
    /// 3: the row is unreadable.
    Unreadable,
}

/// What `remove` or `retry` decided for an item (its `m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyDecision {
    /// 0: delete the record.
    Delete,
    /// 1: there is no record.
    NotFound,
    /// 2: refused (a leased record without force; for `retry`, a record not Dead).
    Refused,
    /// 3: the row is unreadable (and not forced): the call fails.
    Unreadable,
}

/// One item's answer row.
#[derive(Debug, Default)]
pub(super) struct Answer {
    /// The item's place in the statement's arrays, from 1.
    pub(super) ord: usize,
    m: i32,
    /// The state the decision saw (`state`), as its code.
    seen: Option<i32>,
    /// Whether the write happened (`written`).
    pub(super) written: bool,
    /// What an unreadable row holds (`found`).
    pub(super) found: Option<String>,
    /// The new lease's token (`offer`).
    pub(super) token: Option<i64>,
    /// The new expiry, ms (`offer`, `start`, `renew`).
    pub(super) expires_ms: Option<i64>,
    /// The attempts after the write (`offer`, `start`, `fail`).
    pub(super) attempts: Option<i64>,
    /// Whether a newer version was remembered when it completed (`complete`).
    pub(super) superseded: Option<bool>,
    /// Whether the failure made the key Dead (`fail`).
    pub(super) dead: Option<bool>,
}

impl Answer {
    /// Decodes one answer row, by column name.
    pub(super) fn read(row: &Row, ns: &str) -> Result<Answer> {
        let pg = |e: tokio_postgres::Error| {
            corrupt(ns, format!("an answer row that does not decode: {e}"))
        };
        let mut a = Answer::default();
        let (mut ord, mut m) = (None, None);
        for (i, column) in row.columns().iter().enumerate() {
            match column.name() {
                "ord" => ord = Some(row.try_get::<_, i64>(i).map_err(pg)?),
                "m" => m = Some(row.try_get::<_, i32>(i).map_err(pg)?),
                "state" => a.seen = row.try_get(i).map_err(pg)?,
                "written" => a.written = row.try_get(i).map_err(pg)?,
                "found" => a.found = row.try_get(i).map_err(pg)?,
                "token" => a.token = row.try_get(i).map_err(pg)?,
                "expires_ms" => a.expires_ms = row.try_get(i).map_err(pg)?,
                "attempts" => a.attempts = row.try_get(i).map_err(pg)?,
                "superseded" => a.superseded = row.try_get(i).map_err(pg)?,
                "dead" => a.dead = row.try_get(i).map_err(pg)?,
                other => return Err(corrupt(ns, format!("an answer column {other:?}"))),
            }
        }
        let (Some(ord), Some(m)) = (ord, m) else {
            return Err(corrupt(ns, "an answer row without ord or m".to_owned()));
        };
        a.ord = usize::try_from(ord).map_err(|_| corrupt(ns, format!("answer #{ord}")))?;
        a.m = m;
        Ok(a)
    }

    /// The decision of `offer`.
    pub(super) fn offer(&self, ns: &str) -> Result<OfferDecision> {
        use OfferDecision::*;
        Ok(match self.m {
            0 => Duplicate,
            1 => Insert,
            2 => Reclaim,
            3 => Renew,
            4 => CrashCapped,
            5 => Remember,
            6 => Unreadable,
            7 => Outdated,
            _ => return Err(self.unexpected(ns)),
        })
    }

    /// The decision of a claim statement.
    pub(super) fn claim(&self, ns: &str) -> Result<ClaimDecision> {
        use ClaimDecision::*;
        Ok(match self.m {
            0 => Go,
            1 => LeaseLost,
            2 => WrongState,
            3 => Unreadable,
            _ => return Err(self.unexpected(ns)),
        })
    }

    /// The decision of `remove` or `retry`.
    pub(super) fn by_key(&self, ns: &str) -> Result<KeyDecision> {
        use KeyDecision::*;
        Ok(match self.m {
            0 => Delete,
            1 => NotFound,
            2 => Refused,
            3 => Unreadable,
            _ => return Err(self.unexpected(ns)),
        })
    }

    /// The state the decision saw.
    pub(super) fn state(&self, ns: &str) -> Result<State> {
        let code = self
            .seen
            .ok_or_else(|| corrupt(ns, "an answer without a state".to_owned()))?;
        state(i64::from(code), ns)
    }

    /// A value the write returned, which this answer must have.
    pub(super) fn value<T: Copy>(&self, v: Option<T>, name: &str, ns: &str) -> Result<T> {
        v.ok_or_else(|| corrupt(ns, format!("an answer without its {name}: {self:?}")))
    }

    /// A returned count or token, which must fit `T`.
    pub(super) fn number<T: TryFrom<i64>>(
        &self,
        v: Option<i64>,
        name: &str,
        ns: &str,
    ) -> Result<T> {
        let n = self.value(v, name, ns)?;
        T::try_from(n).map_err(|_| corrupt(ns, format!("an answer with a {name} of {n}")))
    }

    /// What an unreadable row holds, for the answer of its key.
    pub(super) fn unreadable(&self, ns: &str) -> Result<Unreadable> {
        self.found
            .clone()
            .map(Unreadable::new)
            .ok_or_else(|| corrupt(ns, "an unreadable answer without what was found".to_owned()))
    }

    /// An answer that does not fit its statement.
    pub(super) fn unexpected(&self, ns: &str) -> Error {
        corrupt(ns, format!("unexpected answer {self:?}"))
    }
}
