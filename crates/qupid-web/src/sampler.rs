//! The throughput chart's data: [`LedgerAdmin::stats`] sampled in the background, and the rates
//! between samples.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use qupid::clock::Timestamp;
use qupid::ledger::Stats;
use qupid::LedgerAdmin;
use serde::Serialize;

use crate::dashboard::Shared;

/// One sample: the counts at a time on the ledger's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Sample {
    pub(crate) at_ms: u64,
    pub(crate) queued: u64,
    pub(crate) running: u64,
    pub(crate) completed: u64,
    pub(crate) dead: u64,
    pub(crate) expired: u64,
}

impl Sample {
    fn new(at: Timestamp, s: Stats) -> Sample {
        Sample {
            at_ms: at.as_millis(),
            queued: s.queued,
            running: s.running,
            completed: s.completed,
            dead: s.dead,
            expired: s.expired,
        }
    }
}

/// The rates between two samples, per second, at the later one's time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Rate {
    pub(crate) at_ms: u64,
    /// Records that became Completed per second: the growth of the completed count (a purge
    /// or a removal in the same interval hides completions, never adds any).
    pub(crate) completed_per_sec: f64,
    /// Records that became Dead per second, likewise.
    pub(crate) dead_per_sec: f64,
}

/// The rates between consecutive samples (none across samples at the same millisecond).
pub(crate) fn rates(samples: &[Sample]) -> Vec<Rate> {
    samples
        .windows(2)
        .filter_map(|w| {
            let (a, b) = (w[0], w[1]);
            let dt = b.at_ms.checked_sub(a.at_ms).filter(|&d| d > 0)?;
            #[allow(clippy::cast_precision_loss)] // counts and spans far below 2^52
            let per_sec = |x: u64, y: u64| y.saturating_sub(x) as f64 * 1_000.0 / dt as f64;
            Some(Rate {
                at_ms: b.at_ms,
                completed_per_sec: per_sec(a.completed, b.completed),
                dead_per_sec: per_sec(a.dead, b.dead),
            })
        })
        .collect()
}

/// Starts the sampling task if it is not running (and if there is a runtime to run it on).
/// It holds the dashboard weakly and ends once every router of it is dropped.
pub(crate) fn start<L: LedgerAdmin>(shared: &Arc<Shared<L>>) {
    if shared.sampler_started.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        shared.sampler_started.store(false, Ordering::Release);
        return;
    };
    let weak = Arc::downgrade(shared);
    let every = shared.options.sample_every;
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            match take(&shared.ledger).await {
                Ok(sample) => push(&shared, sample),
                Err(e) => tracing::debug!(error = %e, "qupid-web: a throughput sample failed"),
            }
        }
    });
}

async fn take<L: LedgerAdmin>(ledger: &L) -> qupid::Result<Sample> {
    let stats = ledger.stats().await?;
    let now = ledger.now().await?;
    Ok(Sample::new(now, stats))
}

fn push<L>(shared: &Shared<L>, sample: Sample) {
    let mut samples = match shared.samples.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    samples.push_back(sample);
    while samples.len() > shared.options.history {
        samples.pop_front();
    }
}

/// The samples kept, oldest first.
pub(crate) fn samples<L>(shared: &Shared<L>) -> Vec<Sample> {
    let samples = match shared.samples.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    samples.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at_ms: u64, completed: u64, dead: u64) -> Sample {
        Sample {
            at_ms,
            queued: 0,
            running: 0,
            completed,
            dead,
            expired: 0,
        }
    }

    #[test]
    fn rates_are_growth_per_second_and_never_negative() {
        let r = rates(&[
            at(1_000, 10, 0),
            at(3_000, 50, 2),
            at(3_000, 60, 2),
            at(4_000, 5, 3),
        ]);
        assert_eq!(r.len(), 2, "no rate across one millisecond: {r:?}");
        assert_eq!(r[0].completed_per_sec, 20.0);
        assert_eq!(r[0].dead_per_sec, 1.0);
        assert_eq!(
            r[1].completed_per_sec, 0.0,
            "a purge is not negative throughput"
        );
        assert_eq!(r[1].dead_per_sec, 1.0);
    }
}
