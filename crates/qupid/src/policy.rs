//! Policy: what blocks a duplicate, for how long, how long records are kept, and the caps.
//!
//! Which states block a duplicate, how long they block, and how long records are *kept* are
//! three separate settings. A record past its blocking window but inside its retention is
//! still visible (`list`, `get`, the CLI) and no longer blocks new work. A record that is
//! purged no longer exists, so it no longer blocks either: keep retention at least as long as
//! the blocking window when the window matters.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ledger::rules::MAX_COUNT;

/// How the pipeline treats keys: leases, attempts, blocking and retention.
///
/// ## Defaults
///
/// | field | default | meaning |
/// |---|---|---|
/// | `lease` | 30 s | how long a claim lasts without renewal |
/// | `max_attempts` | 5 | failed attempts before a key goes Dead |
/// | `crash_cap` | 3 | lease expiries (abandoned claims) before a key goes Dead; 0 = no cap |
/// | `completed` | [`Blocking::Forever`] | a completed key is never processed again |
/// | `dead` | [`Blocking::Forever`] | a dead key is never retried by itself |
/// | `newer_versions` | [`NewerVersions::Remember`] | a new version seen in flight is processed next |
/// | `retention` | keep everything | nothing is purged automatically |
/// | `purge_every` | 60 s | how often the pipeline purges by `retention` |
///
/// The struct is `#[non_exhaustive]` (new settings may come), so it is built from
/// [`Policy::default`] with the setters, one per field, each taking and returning the policy;
/// the fields stay public to read and to assign:
///
/// ```
/// use std::time::Duration;
/// use qupid::{Blocking, Keep, Policy, Retention};
///
/// let policy = Policy::default()
///     .lease(Duration::from_secs(60))
///     .max_attempts(3)
///     .completed(Blocking::For(Duration::from_secs(300))) // a five-minute de-dup window
///     .retention(Retention {
///         completed: Keep::younger_than(Duration::from_secs(7 * 24 * 3600)),
///         dead: Keep::FOREVER,
///     });
/// policy.validate()?;
/// assert_eq!(policy.max_attempts, 3);
///
/// let mut tweaked = policy.clone();
/// tweaked.crash_cap = 0; // fields can be assigned too
/// # Ok::<(), qupid::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Policy {
    /// How long a lease lasts before it must be renewed. Jobs renew theirs in the background
    /// every third of this.
    pub lease: Duration,
    /// How many failed attempts a key gets; the last failure makes it Dead. At most
    /// [`MAX_COUNT`](crate::ledger::rules::MAX_COUNT) (65,535), the largest count a record
    /// keeps.
    pub max_attempts: u32,
    /// How many times a key's lease may expire without an ending (a crash or a hang) before
    /// the key goes Dead with the error `"abandoned"`. Zero turns the cap off. At most
    /// [`MAX_COUNT`](crate::ledger::rules::MAX_COUNT) (65,535).
    pub crash_cap: u32,
    /// How long a Completed key blocks a duplicate.
    pub completed: Blocking,
    /// How long a Dead key blocks a duplicate.
    pub dead: Blocking,
    /// What to do with a newer version offered while the key is in flight.
    pub newer_versions: NewerVersions,
    /// How long finished records are kept.
    pub retention: Retention,
    /// How often a running pipeline purges by [`retention`](Policy::retention).
    pub purge_every: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lease: Duration::from_secs(30),
            max_attempts: 5,
            crash_cap: 3,
            completed: Blocking::Forever,
            dead: Blocking::Forever,
            newer_versions: NewerVersions::Remember,
            retention: Retention::default(),
            purge_every: Duration::from_secs(60),
        }
    }
}

/// Setters, one per field: `Policy::default().lease(…).max_attempts(…)`. A method and a field
/// may share a name in Rust: `policy.lease` reads the field, `policy.lease(d)` calls the
/// setter. None of them checks anything; [`Policy::validate`] (which the queue and the
/// pipeline call) does.
impl Policy {
    /// Sets [`lease`](Policy::lease): how long a claim lasts without renewal (at least
    /// 10 ms).
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets [`max_attempts`](Policy::max_attempts): failed attempts before a key goes Dead
    /// (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets [`crash_cap`](Policy::crash_cap): lease expiries before a key goes Dead as
    /// abandoned; 0 turns the cap off.
    #[must_use]
    pub fn crash_cap(mut self, crash_cap: u32) -> Self {
        self.crash_cap = crash_cap;
        self
    }

    /// Sets [`completed`](Policy::completed): how long a Completed key blocks a duplicate.
    #[must_use]
    pub fn completed(mut self, blocking: Blocking) -> Self {
        self.completed = blocking;
        self
    }

    /// Sets [`dead`](Policy::dead): how long a Dead key blocks a duplicate.
    #[must_use]
    pub fn dead(mut self, blocking: Blocking) -> Self {
        self.dead = blocking;
        self
    }

    /// Sets [`newer_versions`](Policy::newer_versions): what a newer version offered while
    /// the key is in flight does.
    #[must_use]
    pub fn newer_versions(mut self, newer_versions: NewerVersions) -> Self {
        self.newer_versions = newer_versions;
        self
    }

    /// Sets [`retention`](Policy::retention): how long finished records are kept.
    #[must_use]
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets [`purge_every`](Policy::purge_every): how often a running pipeline purges (not
    /// zero).
    #[must_use]
    pub fn purge_every(mut self, purge_every: Duration) -> Self {
        self.purge_every = purge_every;
        self
    }
}

impl Policy {
    /// Checks that the settings can work.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) if the lease is shorter than 10 ms, if
    /// `max_attempts` is zero, if `max_attempts` or `crash_cap` is above
    /// [`MAX_COUNT`](crate::ledger::rules::MAX_COUNT) (records count attempts and abandonments
    /// up to there, so a larger limit would never be reached), or if `purge_every` is zero.
    pub fn validate(&self) -> Result<()> {
        if self.lease < Duration::from_millis(10) {
            return Err(Error::config(format!(
                "lease must be at least 10ms, found {:?}",
                self.lease
            )));
        }
        if self.max_attempts == 0 {
            return Err(Error::config("max_attempts must be at least 1, found 0"));
        }
        for (name, n) in [
            ("max_attempts", self.max_attempts),
            ("crash_cap", self.crash_cap),
        ] {
            if n > MAX_COUNT {
                return Err(Error::config(format!(
                    "{name} must be at most {MAX_COUNT} (the largest count a record keeps), \
                     found {n}"
                )));
            }
        }
        if self.purge_every.is_zero() {
            return Err(Error::config("purge_every must not be zero"));
        }
        Ok(())
    }

    /// The blocking rule for finished records in `state` (Completed or Dead).
    pub fn blocking(&self, state: crate::State) -> Blocking {
        match state {
            crate::State::Completed => self.completed,
            crate::State::Dead => self.dead,
            _ => Blocking::Forever,
        }
    }
}

/// How long a finished (Completed or Dead) key blocks a duplicate offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blocking {
    /// Blocks for as long as the record is kept.
    Forever,
    /// Blocks for this long after the key finished, then lets the next offer through
    /// (a de-dup window).
    For(Duration),
    /// Does not block: the next offer processes the key again.
    Never,
}

impl Blocking {
    /// Whether a key that finished at `at` still blocks at `now`.
    pub fn blocks(self, at: Timestamp, now: Timestamp) -> bool {
        match self {
            Blocking::Forever => true,
            Blocking::For(window) => now.since(at) < window,
            Blocking::Never => false,
        }
    }
}

/// What happens to a newer version offered while the key is Queued or Running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NewerVersions {
    /// The offer is a duplicate now, but the ledger remembers it: when the running attempt
    /// completes, the key does not block, so the next poll processes the latest content.
    Remember,
    /// The offer is a duplicate and is forgotten.
    Ignore,
}

/// How long finished records are kept, separately for Completed and Dead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Rule for Completed records.
    pub completed: Keep,
    /// Rule for Dead records.
    pub dead: Keep,
}

impl Retention {
    /// Whether this retention ever removes anything.
    pub fn is_forever(&self) -> bool {
        self.completed.is_forever() && self.dead.is_forever()
    }
}

/// A retention rule: keep records younger than `max_age`, and at most the newest
/// `max_count` of them. `None` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keep {
    /// Records that finished longer ago than this are purged.
    pub max_age: Option<Duration>,
    /// Only the newest this many records are kept.
    pub max_count: Option<u64>,
}

impl Keep {
    /// Keep everything.
    pub const FOREVER: Keep = Keep {
        max_age: None,
        max_count: None,
    };

    /// Keep records younger than `age`.
    pub fn younger_than(age: Duration) -> Keep {
        Keep {
            max_age: Some(age),
            max_count: None,
        }
    }

    /// Keep the newest `n` records.
    pub fn newest(n: u64) -> Keep {
        Keep {
            max_age: None,
            max_count: Some(n),
        }
    }

    /// Whether this rule ever removes anything.
    pub fn is_forever(&self) -> bool {
        self.max_age.is_none() && self.max_count.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_window_blocks_until_it_has_passed(at in 0u64..1_000_000, window in 0u64..10_000, dt in 0u64..20_000) {
            let b = Blocking::For(Duration::from_millis(window));
            let now = Timestamp(at + dt);
            prop_assert_eq!(b.blocks(Timestamp(at), now), dt < window);
            prop_assert!(Blocking::Forever.blocks(Timestamp(at), now));
            prop_assert!(!Blocking::Never.blocks(Timestamp(at), now));
        }
    }

    #[test]
    fn setters_set_their_field_and_nothing_else() {
        let d = Policy::default();
        let all = Policy::default()
            .lease(Duration::from_secs(7))
            .max_attempts(9)
            .crash_cap(0)
            .completed(Blocking::Never)
            .dead(Blocking::For(Duration::from_secs(5)))
            .newer_versions(NewerVersions::Ignore)
            .retention(Retention {
                completed: Keep::newest(10),
                dead: Keep::younger_than(Duration::from_secs(60)),
            })
            .purge_every(Duration::from_secs(2));
        assert_eq!(all.lease, Duration::from_secs(7));
        assert_eq!(all.max_attempts, 9);
        assert_eq!(all.crash_cap, 0);
        assert_eq!(all.completed, Blocking::Never);
        assert_eq!(all.dead, Blocking::For(Duration::from_secs(5)));
        assert_eq!(all.newer_versions, NewerVersions::Ignore);
        assert_eq!(all.retention.completed, Keep::newest(10));
        assert_eq!(all.retention.dead.max_age, Some(Duration::from_secs(60)));
        assert_eq!(all.purge_every, Duration::from_secs(2));
        // Each setter alone leaves the other fields at their defaults.
        let one = Policy::default().max_attempts(2);
        assert_eq!(
            Policy {
                max_attempts: 5,
                ..one
            },
            d
        );
    }

    #[test]
    fn validate_refuses_unworkable_settings() {
        let mut p = Policy::default();
        assert!(p.validate().is_ok());
        p.max_attempts = 0;
        assert_eq!(p.validate().unwrap_err().kind(), crate::ErrorKind::Config);
        let p = Policy {
            lease: Duration::from_millis(1),
            ..Policy::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("lease"));
        let most = Policy::default()
            .max_attempts(MAX_COUNT)
            .crash_cap(MAX_COUNT);
        assert!(most.validate().is_ok());
        for p in [
            Policy::default().max_attempts(MAX_COUNT + 1),
            Policy::default().crash_cap(MAX_COUNT + 1),
        ] {
            let err = p.validate().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config);
            assert!(err.to_string().contains("at most 65535"), "{err}");
        }
    }
}
