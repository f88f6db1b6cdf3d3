//! Exponential backoff with jitter between attempts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long to wait before retrying a failed attempt: exponential, capped, with jitter.
///
/// The wait after the `n`-th failed attempt is `initial × multiplier^(n-1)`, capped at `max`,
/// then reduced by a random fraction of up to `jitter` (so many keys failing together do not
/// retry together).
///
/// ## Defaults
///
/// `initial` 100 ms, `max` 30 s, `multiplier` 2, `jitter` 0.5.
///
/// ```
/// use std::time::Duration;
/// use qupid::Backoff;
///
/// let b = Backoff { jitter: 0.0, ..Backoff::default() };
/// assert_eq!(b.delay(1), Duration::from_millis(100));
/// assert_eq!(b.delay(3), Duration::from_millis(400));
/// assert_eq!(b.delay(100), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// The wait after the first failure.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// How much each wait grows over the previous one.
    pub multiplier: f64,
    /// The largest fraction taken off at random, from 0 (none) to 1.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The wait after the `attempt`-th failed attempt (from 1), with fresh randomness.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }

    /// The wait after the `attempt`-th failure, with `random` in `[0, 1)` choosing the
    /// jitter: a pure function, for tests.
    pub fn delay_with(&self, attempt: u32, random: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(1024) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        let capped = base.min(self.max.as_secs_f64());
        let cut = self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        Duration::try_from_secs_f64(capped * (1.0 - cut)).unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delays_stay_within_the_envelope(
            attempt in 1u32..200,
            random in 0.0f64..1.0,
            initial_ms in 1u64..5_000,
            max_ms in 1u64..120_000,
            multiplier in 1.0f64..4.0,
            jitter in 0.0f64..=1.0,
        ) {
            let b = Backoff {
                initial: Duration::from_millis(initial_ms),
                max: Duration::from_millis(max_ms),
                multiplier,
                jitter,
            };
            let d = b.delay_with(attempt, random);
            let full = b.delay_with(attempt, 0.0);
            prop_assert!(d <= full, "jitter only shortens");
            prop_assert!(full <= b.max, "capped at max: {full:?} > {:?}", b.max);
            // Without jitter the wait is exactly initial × multiplier^(attempt-1), capped.
            let want = (initial_ms as f64 * multiplier.powi(attempt as i32 - 1)).min(max_ms as f64);
            prop_assert!((full.as_secs_f64() * 1000.0 - want).abs() <= want * 1e-9 + 1e-6);
            prop_assert!(d.as_secs_f64() >= full.as_secs_f64() * (1.0 - jitter) - 1e-9);
            // The envelope grows until it reaches the cap.
            prop_assert!(b.delay_with(attempt + 1, 0.0) >= full);
        }
    }

    #[test]
    fn grows_then_caps() {
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        let waits: Vec<u128> = (1..=12).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(&waits[..5], &[100, 200, 400, 800, 1600]);
        assert_eq!(waits[11], 30_000);
    }
}
