//! The source tasks: poll (or read) each source, skip what is invalid, publish the rest, and
//! tell the stop logic what each poll found.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::builder::Until;
use super::report::PipelineCounters;
use super::source::{Item, Kind};
use super::worker::panic_message;
use super::Source;
use crate::key::Entry;
use crate::ledger::Ledger;
use crate::observe::LogOnce;
use crate::queue::{Published, Queue};

/// What the stop logic needs to know about sources and jobs.
pub(super) struct Idle {
    /// Bumped whenever a job ends, so a poll can tell whether anything ended meanwhile.
    pub(super) ended: AtomicU64,
    /// Per source: its last poll found nothing to do (see [`Until`]) while nothing was held
    /// here.
    quiet: Vec<AtomicBool>,
    /// Per source: finished (a stream that ended).
    finished: Vec<AtomicBool>,
    pub(super) changed: Notify,
    until: Until,
}

impl Idle {
    pub(super) fn new(sources: usize, until: Until) -> Self {
        Idle {
            ended: AtomicU64::new(0),
            quiet: (0..sources).map(|_| AtomicBool::new(false)).collect(),
            finished: (0..sources).map(|_| AtomicBool::new(false)).collect(),
            changed: Notify::new(),
            until,
        }
    }

    /// Whether every source is finished, or quiet in a pipeline that stops when quiet.
    pub(super) fn all(&self) -> bool {
        let stops_when_quiet = self.until != Until::Told;
        self.quiet.iter().zip(&self.finished).all(|(q, f)| {
            f.load(Ordering::SeqCst) || (stops_when_quiet && q.load(Ordering::SeqCst))
        })
    }

    /// Whether a poll that found `polled` leaves its source with nothing to do.
    fn is_quiet(&self, polled: Polled) -> bool {
        match self.until {
            Until::Drained => polled.accepted + polled.in_flight + polled.stale == 0,
            Until::Idle | Until::Told => polled.accepted + polled.stale == 0,
        }
    }
}

/// What one poll's entries met in the ledger.
#[derive(Debug, Clone, Copy, Default)]
struct Polled {
    accepted: usize,
    /// Duplicates of keys leased (here or in another instance).
    in_flight: usize,
    /// Entries dropped unoffered: too old to offer.
    stale: usize,
}

/// Entries the sources handed over as errors: skipped, counted, and logged once per
/// distinct error (a source polled every second would otherwise log the same bad row every
/// second).
pub(super) struct Invalid {
    counters: Arc<PipelineCounters>,
    logged: LogOnce,
}

impl Invalid {
    pub(super) fn new(counters: Arc<PipelineCounters>) -> Self {
        Invalid {
            counters,
            logged: LogOnce::default(),
        }
    }

    /// The entries of `items`; the errors are counted and logged (under `span`).
    fn skip<T>(&self, items: Vec<Item<T>>, span: &tracing::Span) -> Vec<Entry<T>> {
        // `filter_map` then `collect` reuses the batch's allocation where the layouts allow.
        items
            .into_iter()
            .filter_map(|item| match item {
                Ok(entry) => Some(entry),
                Err(e) => {
                    self.counters.invalid.add(1);
                    if self.logged.first(&e.to_string()) {
                        tracing::warn!(parent: span, error = %e, "skipped an invalid entry");
                    } else {
                        tracing::debug!(parent: span, error = %e, "skipped an invalid entry again");
                    }
                    None
                }
            })
            .collect()
    }
}

/// Everything a source task shares with the rest of the pipeline.
pub(super) struct Polling<L, T> {
    pub(super) queue: Queue<L, T>,
    pub(super) idle: Arc<Idle>,
    pub(super) invalid: Arc<Invalid>,
    pub(super) counters: Arc<PipelineCounters>,
    pub(super) stop: CancellationToken,
}

impl<L: Ledger, T: Send + Sync + 'static> Polling<L, T> {
    /// Runs source `i` until it is finished or the pipeline stops polling.
    pub(super) async fn run(self, i: usize, source: Source<T>) {
        let name = source.name;
        match source.kind {
            Kind::Poll {
                every,
                mut poll,
                max_age,
            } => {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = self.stop.cancelled() => return,
                    }
                    let ended_before = self.idle.ended.load(Ordering::SeqCst);
                    let fresh_until = tokio::time::Instant::now() + max_age;
                    let span = tracing::info_span!(
                        "qupid.poll",
                        source = %name,
                        entries = tracing::field::Empty,
                        accepted = tracing::field::Empty,
                    );
                    let polled = AssertUnwindSafe(poll())
                        .catch_unwind()
                        .instrument(span.clone());
                    let batch = tokio::select! {
                        b = polled => b,
                        _ = self.stop.cancelled() => return,
                    };
                    let polled = match batch {
                        Ok(Ok(items)) => {
                            span.record("entries", items.len());
                            let entries = self.invalid.skip(items, &span);
                            self.publish(entries, Some(fresh_until))
                                .instrument(span.clone())
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(parent: &span, error = %e, "poll failed");
                            self.counters.poll_errors.add(1);
                            None
                        }
                        Err(panic) => {
                            let panic = panic_message(&*panic);
                            tracing::error!(parent: &span, %panic, "poll panicked");
                            self.counters.poll_errors.add(1);
                            None
                        }
                    };
                    span.record("accepted", polled.map_or(0, |p| p.accepted));
                    let quiet = polled.is_some_and(|p| self.idle.is_quiet(p))
                        && self.queue.held() == 0
                        && self.idle.ended.load(Ordering::SeqCst) == ended_before;
                    self.idle.quiet[i].store(quiet, Ordering::SeqCst);
                    self.idle.changed.notify_one();
                }
            }
            Kind::Stream(stream) => {
                let mut chunks = stream.ready_chunks(256);
                loop {
                    let next = tokio::select! {
                        n = chunks.next() => n,
                        _ = self.stop.cancelled() => return,
                    };
                    let Some(items) = next else { break };
                    let entries = self.invalid.skip(items, &tracing::Span::current());
                    if self.publish(entries, None).await.is_none() && self.stop.is_cancelled() {
                        return;
                    }
                }
                self.idle.finished[i].store(true, Ordering::SeqCst);
                self.idle.changed.notify_one();
            }
        }
    }

    /// Publishes a batch; answers what its entries met, or `None` if the pipeline is stopping
    /// or the ledger failed for good (the pipeline then stops with that error). While the
    /// ledger fails transiently (unreachable, restarting), the same entries are offered again
    /// after a growing pause, so a stream source loses nothing either.
    /// Entries not offered by `fresh_until` are dropped and counted as stale.
    async fn publish(
        &self,
        mut entries: Vec<Entry<T>>,
        fresh_until: Option<tokio::time::Instant>,
    ) -> Option<Polled> {
        let mut pause = Duration::from_millis(50);
        loop {
            let publishing = async {
                match fresh_until {
                    Some(at) => self.queue.publish_batch_until(entries, at).await,
                    None => self
                        .queue
                        .publish_batch(entries)
                        .await
                        .map(|o| (o, Vec::new())),
                }
            };
            let out = tokio::select! {
                o = publishing => o,
                _ = self.stop.cancelled() => return None,
            };
            match out {
                Ok((out, late)) => {
                    let mut polled = Polled {
                        stale: late.len(),
                        ..Polled::default()
                    };
                    if !late.is_empty() {
                        self.counters.stale.add(late.len() as u64);
                        tracing::debug!(
                            stale = late.len(),
                            "entries not offered while fresh: dropped until the next poll"
                        );
                    }
                    for p in out {
                        match p {
                            Published::Accepted(_) => polled.accepted += 1,
                            Published::Duplicate(s) if s.is_leased() => polled.in_flight += 1,
                            // Finished, or never processable as offered (an outdated
                            // version), or not until repaired: nothing to wait for.
                            Published::Duplicate(_)
                            | Published::Outdated(_)
                            | Published::Unreadable(_) => {}
                        }
                    }
                    return Some(polled);
                }
                Err(e) if e.error().is_transient() => {
                    tracing::warn!(error = %e.error(), retry_in = ?pause, "offering a batch failed; trying again");
                    entries = e.into_entries();
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.stop.cancelled() => return None,
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) if e.kind() == crate::ErrorKind::Closed => return None,
                // The queue told the ledger's health; the pipeline stops with this error.
                Err(e) => {
                    tracing::debug!(error = %e, "offering a batch failed, and retrying cannot fix it");
                    return None;
                }
            }
        }
    }
}
