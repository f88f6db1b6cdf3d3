//! The typed protocol between this ledger and its scripts ([`lua/`](super::scripts)): the
//! arguments each script takes after the common ones, by name, in the order of its `ARGV`
//! slots, and what each of its replies says, decoded into the ledger's types. Nothing else
//! adds a script argument or reads a reply's values.
//!
//! Every script takes the namespace-wide keys first (`KEYS[1..10]`) and the record-key prefix
//! (`ARGV[1]`); batch scripts then take the records' keys (`KEYS[11..]`) and whether no key
//! is there twice (`ARGV[2]`): see [`scripts::prepare`](super::scripts::prepare). Each
//! script's header comment states the same slots from the Lua side.

use ::redis::{ScriptInvocation, Value};

use super::decode::{bad_reply, count, expect_len, int, state, uint, unreadable};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::key::{Offer, Version};
use crate::ledger::types::{Claim, Done, Failed, Failure, Lease, Offered, Purged, Refused, Token};
use crate::policy::Blocking;

/// How a blocking rule travels: -1 forever, -2 never, or a window in ms.
pub(super) fn blocking(b: Blocking) -> i64 {
    match b {
        Blocking::Forever => -1,
        Blocking::Never => -2,
        Blocking::For(d) => i64::try_from(super::decode::ms_ceil(d)).unwrap_or(i64::MAX),
    }
}

/// How a retention limit travels: -1 for none.
fn limit(n: Option<u64>) -> i64 {
    n.map_or(-1, |n| {
        i64::try_from(n.min(super::decode::MAX_MS)).unwrap_or(i64::MAX)
    })
}

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

/// `offer.lua`.
pub(super) struct OfferArgs<'a> {
    /// `ARGV[3]`: the lease, in ms.
    pub(super) lease_ms: u64,
    /// `ARGV[4]`: the crash cap (0: none).
    pub(super) crash_cap: u32,
    /// `ARGV[5]`: whether newer versions offered while a key is leased are remembered.
    pub(super) remember: bool,
    /// `ARGV[6]`: how long a Completed record blocks.
    pub(super) completed: Blocking,
    /// `ARGV[7]`: how long a Dead record blocks.
    pub(super) dead: Blocking,
    /// `ARGV[8]`: whether each accepted key's attempt starts at once (offer-and-start).
    pub(super) start: bool,
    /// `ARGV[8 + i]`: the version of item `i` (`''`: none); left out when no item has one,
    /// since each argument costs the server.
    pub(super) offers: &'a [&'a Offer],
}

impl OfferArgs<'_> {
    pub(super) fn add_to(&self, inv: &mut ScriptInvocation<'_>) {
        inv.arg(self.lease_ms)
            .arg(self.crash_cap)
            .arg(flag(self.remember))
            .arg(blocking(self.completed))
            .arg(blocking(self.dead))
            .arg(flag(self.start));
        if self.offers.iter().any(|o| o.version.is_some()) {
            for o in self.offers {
                inv.arg(o.version.as_ref().map_or("", Version::as_str));
            }
        }
    }
}

/// `start.lua` and `renew.lua` (with a lease), `complete.lua` and `release.lua` (without).
pub(super) struct ClaimArgs<'a> {
    /// `ARGV[3]`: the lease, in ms.
    pub(super) lease_ms: Option<u64>,
    /// Then the token of each claim, in the order of the records' keys.
    pub(super) claims: &'a [&'a Claim],
}

impl ClaimArgs<'_> {
    pub(super) fn add_to(&self, inv: &mut ScriptInvocation<'_>) {
        if let Some(lease) = self.lease_ms {
            inv.arg(lease);
        }
        for c in self.claims {
            inv.arg(c.token.0);
        }
    }
}

/// `fail.lua`.
pub(super) struct FailArgs<'a> {
    /// `ARGV[3]`: the lease of a retry, in ms.
    pub(super) lease_ms: u64,
    /// `ARGV[4]`: the attempts after which a key is Dead.
    pub(super) max_attempts: u32,
    /// Then two slots per failure: its token, its error.
    pub(super) failures: &'a [&'a Failure],
}

impl FailArgs<'_> {
    pub(super) fn add_to(&self, inv: &mut ScriptInvocation<'_>) {
        inv.arg(self.lease_ms).arg(self.max_attempts);
        for f in self.failures {
            inv.arg(f.claim.token.0).arg(f.error.as_str());
        }
    }
}

/// `remove.lua`.
pub(super) struct RemoveArgs {
    /// `ARGV[3]`: whether leased and unreadable records are removed too.
    pub(super) force: bool,
    /// `ARGV[4]`: check only: fail as the call would, write nothing.
    pub(super) check_only: bool,
}

impl RemoveArgs {
    pub(super) fn add_to(&self, inv: &mut ScriptInvocation<'_>) {
        inv.arg(flag(self.force)).arg(flag(self.check_only));
    }
}

/// `retry.lua`: `ARGV[3]`, check only: fail as the call would, write nothing.
pub(super) struct RetryArgs {
    pub(super) check_only: bool,
}

impl RetryArgs {
    pub(super) fn add_to(&self, inv: &mut ScriptInvocation<'_>) {
        inv.arg(flag(self.check_only));
    }
}

/// `purge.lua` (not a batch script: its slots start at `ARGV[2]`).
pub(super) struct PurgeArgs {
    /// `ARGV[2]`, `ARGV[3]`: the Completed records' max age in ms and max count (`None`: no
    /// limit).
    pub(super) completed: (Option<u64>, Option<u64>),
    /// `ARGV[4]`, `ARGV[5]`: the same for Dead records.
    pub(super) dead: (Option<u64>, Option<u64>),
    /// `ARGV[6]`: the most records one run removes.
    pub(super) chunk: u64,
    /// `ARGV[7]`, `ARGV[8]`: where a purge by count cuts the Completed records of a sharded
    /// namespace (`''` and `0`: no cut): every record that finished before the time goes,
    /// and the first this many of those that finished at it.
    pub(super) completed_cut: Option<(i64, u64)>,
    /// `ARGV[9]`, `ARGV[10]`: the same for Dead records.
    pub(super) dead_cut: Option<(i64, u64)>,
    /// `ARGV[11]`: the clock to purge by, as the first run of this purge answered it (`''`:
    /// read it).
    pub(super) now: Option<i64>,
}

impl PurgeArgs {
    pub(super) fn add_to(&self, inv: &mut ScriptInvocation<'_>) {
        inv.arg(limit(self.completed.0))
            .arg(limit(self.completed.1))
            .arg(limit(self.dead.0))
            .arg(limit(self.dead.1))
            .arg(self.chunk);
        for cut in [self.completed_cut, self.dead_cut] {
            match cut {
                Some((time, at_time)) => inv.arg(time).arg(at_time),
                None => inv.arg("").arg(0),
            };
        }
        match self.now {
            Some(now) => inv.arg(now),
            None => inv.arg(""),
        };
    }
}

/// Reply codes of the claim scripts, first value of each item (a string in its place is
/// what an unreadable record holds).
mod claim_code {
    /// Done; the item's other values are the script's answer.
    pub(super) const DONE: i64 = 0;
    /// The token is not the key's, or there is no record.
    pub(super) const LEASE_LOST: i64 = 1;
    /// The state (the item's second value) does not allow the operation.
    pub(super) const WRONG_STATE: i64 = 2;
}

/// `offer.lua`'s reply: the expiry of every new lease, then two values per item: the token
/// and the attempts (accepted) | 0, state (duplicate) | -1, state (outdated) | what an
/// unreadable record holds, 0.
pub(super) fn offered(values: &[Value], n: usize, what: &str) -> Result<Vec<Offered>> {
    let expires_at = Timestamp(uint(values, 0, what)?);
    let items = values.get(1..).unwrap_or_default();
    expect_len(items, n, 2, what)?;
    items
        .chunks(2)
        .map(|c| {
            if let Some(u) = unreadable(c, 0) {
                return Ok(Offered::Unreadable(u));
            }
            Ok(match int(c, 0, what)? {
                0 => Offered::Duplicate(state(int(c, 1, what)?, what)?),
                -1 => Offered::Outdated(state(int(c, 1, what)?, what)?),
                _ => Offered::Accepted(Lease {
                    token: Token(uint(c, 0, what)?),
                    expires_at,
                    attempts: count(c, 1, what)?,
                }),
            })
        })
        .collect()
}

/// A claim script's reply: `per` values per claim, the first a [`claim_code`]; `done` reads
/// the values of a claim that went through.
pub(super) fn claimed<T>(
    values: &[Value],
    n: usize,
    per: usize,
    what: &str,
    done: impl Fn(&[Value]) -> Result<T>,
) -> Result<Vec<Result<T, Refused>>> {
    expect_len(values, n, per, what)?;
    values
        .chunks(per)
        .map(|c| {
            if let Some(u) = unreadable(c, 0) {
                return Ok(Err(Refused::Unreadable(u)));
            }
            match int(c, 0, what)? {
                claim_code::DONE => done(c).map(Ok),
                claim_code::LEASE_LOST => Ok(Err(Refused::LeaseLost)),
                claim_code::WRONG_STATE => {
                    Ok(Err(Refused::WrongState(state(int(c, 1, what)?, what)?)))
                }
                code => Err(bad_reply(what, format!("unknown outcome code {code}"))),
            }
        })
        .collect()
}

/// `start.lua`: 0, the attempt, the expiry.
pub(super) fn started(c: &[Value]) -> Result<crate::ledger::types::Started> {
    Ok(crate::ledger::types::Started {
        attempt: count(c, 1, "start")?,
        expires_at: Timestamp(uint(c, 2, "start")?),
    })
}

/// `renew.lua`: 0, the expiry, 0.
pub(super) fn renewed(c: &[Value]) -> Result<Timestamp> {
    Ok(Timestamp(uint(c, 1, "renew")?))
}

/// `fail.lua`: 0, 1 if the key went Dead (else 0), the attempts.
pub(super) fn failed(c: &[Value]) -> Result<Failed> {
    let attempts = count(c, 2, "fail")?;
    Ok(if int(c, 1, "fail")? == 1 {
        Failed::Dead { attempts }
    } else {
        Failed::Retry { attempts }
    })
}

/// `complete.lua`, the busiest reply and so the smallest: one value per claim, the integer 0
/// (completed) | 1 (completed, superseded) | 2 (lease lost) | 3 + the state (wrong state),
/// or a string, what an unreadable record holds.
pub(super) fn completed(values: &[Value], n: usize) -> Result<Vec<Result<Done, Refused>>> {
    let what = "complete";
    expect_len(values, n, 1, what)?;
    (0..values.len())
        .map(|i| {
            if let Some(u) = unreadable(values, i) {
                return Ok(Err(Refused::Unreadable(u)));
            }
            match int(values, i, what)? {
                0 => Ok(Ok(Done { superseded: false })),
                1 => Ok(Ok(Done { superseded: true })),
                2 => Ok(Err(Refused::LeaseLost)),
                code => Ok(Err(Refused::WrongState(state(code - 3, what)?))),
            }
        })
        .collect()
}

/// What `remove.lua` or `retry.lua` did with one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ByKey {
    /// 0, 0: the record is gone.
    Done,
    /// 1, 0: there was none.
    NotFound,
    /// 2, its state: refused.
    Refused(crate::ledger::State),
}

/// The reply of `remove.lua` or `retry.lua`: two values per key.
pub(super) fn by_key(values: &[Value], n: usize, what: &str) -> Result<Vec<ByKey>> {
    expect_len(values, n, 2, what)?;
    values
        .chunks(2)
        .map(|c| {
            Ok(match int(c, 0, what)? {
                0 => ByKey::Done,
                1 => ByKey::NotFound,
                2 => ByKey::Refused(state(int(c, 1, what)?, what)?),
                code => return Err(bad_reply(what, format!("unknown outcome code {code}"))),
            })
        })
        .collect()
}

/// The reply of `purge.lua`: the Completed and Dead records removed, whether more remain,
/// and the clock it purged by.
pub(super) fn purged(values: &[Value]) -> Result<(Purged, bool, i64)> {
    let what = "purge";
    expect_len(values, 1, 4, what)?;
    let purged = Purged {
        completed: uint(values, 0, what)?,
        dead: uint(values, 1, what)?,
    };
    Ok((purged, int(values, 2, what)? != 0, int(values, 3, what)?))
}
