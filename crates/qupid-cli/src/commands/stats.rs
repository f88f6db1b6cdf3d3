//! `qupid stats [--watch [SECS]]`: counts per state, the expired and the oldest leases, the
//! ledger's clock.

use std::io::Write;
use std::time::Duration;

use qupid::clock::Timestamp;
use qupid::ledger::Stats;
use qupid::State;

use crate::args::StatsArgs;
use crate::error::{one_line, print};
use crate::output::json::{self, StatsJson};
use crate::output::{escape, time, Align, Table};
use crate::target::Target;

/// Clears the terminal and moves the cursor home, between refreshes.
const CLEAR: &str = "\x1b[2J\x1b[H";

/// What `stats` shows, read from the ledger.
struct Snapshot {
    stats: Stats,
    now: Timestamp,
    oldest_lease: Option<Timestamp>,
}

impl Snapshot {
    /// Counts, the clock, and the earliest lease expiry among Queued and Running records
    /// (read by paging through them: it costs one `list` per thousand leased records).
    async fn take(target: &Target) -> anyhow::Result<Snapshot> {
        let stats = target.stats().await?;
        let mut oldest_lease: Option<Timestamp> = None;
        for state in [State::Queued, State::Running] {
            if stats.count(state) == 0 {
                continue;
            }
            target
                .scan(state, |r| {
                    if let Some(at) = r.expires_at {
                        oldest_lease = Some(oldest_lease.map_or(at, |o| o.min(at)));
                    }
                })
                .await?;
        }
        let now = target.now().await?;
        Ok(Snapshot {
            stats,
            now,
            oldest_lease,
        })
    }

    fn render(&self, target: &Target, json: bool) -> anyhow::Result<String> {
        if json {
            return json::line(&StatsJson {
                ledger: &target.url,
                namespace: target.namespace.as_deref(),
                now_ms: self.now.as_millis(),
                counts: self.stats.into(),
                total: self.stats.total(),
                expired_leases: self.stats.expired,
                oldest_lease_expires_at_ms: self.oldest_lease.map(Timestamp::as_millis),
            });
        }
        let mut head = Table::headless();
        head.row(["ledger", &escape(&target.url)]);
        if let Some(ns) = &target.namespace {
            // An empty namespace is most often a typo in --namespace.
            let note = if self.stats.total() == 0 {
                " (empty: is this the pipeline's namespace?)"
            } else {
                ""
            };
            head.row(["namespace", &format!("{}{note}", escape(ns))]);
        }
        head.row(["clock", &format!("{} (the ledger's)", time::utc(self.now))]);
        let lease = match self.oldest_lease {
            Some(at) if at >= self.now => format!("expires {}", time::relative(at, self.now)),
            Some(at) => format!(
                "expired {} (its holder stopped renewing; the next offer takes it over)",
                time::relative(at, self.now)
            ),
            None => "none (nothing queued or running)".to_owned(),
        };
        head.row(["oldest lease", &lease]);
        let expired = match self.stats.expired {
            0 => "none".to_owned(),
            n => format!(
                "{n} of the queued and running (their holders stopped renewing; the next offer \
                 of each takes it over)"
            ),
        };
        head.row(["expired leases", &expired]);
        head.row([
            "retention",
            "set by each pipeline's Policy; purge by hand with `qupid purge`",
        ]);
        let mut counts = Table::new(["STATE", "RECORDS"]).align(1, Align::Right);
        for state in State::ALL {
            counts.row([state.to_string(), self.stats.count(state).to_string()]);
        }
        counts.row(["total".to_owned(), self.stats.total().to_string()]);
        Ok(format!("{}\n{}", head.render(), counts.render()))
    }
}

pub(super) async fn run(args: StatsArgs, target: &Target, json: bool) -> anyhow::Result<()> {
    let Some(secs) = args.watch else {
        let snapshot = Snapshot::take(target).await?;
        return print(&snapshot.render(target, json)?);
    };
    // Listen for Ctrl-C before the first refresh, so that it never kills the process
    // half-way through printing.
    let mut interrupted = Interrupt::new()?;
    loop {
        match Snapshot::take(target).await {
            Ok(snapshot) => {
                let text = snapshot.render(target, json)?;
                if json {
                    print(&text)?;
                } else {
                    print(&format!(
                        "{CLEAR}{text}\nrefreshing every {secs}s; Ctrl-C to stop\n"
                    ))?;
                }
            }
            // A server that blinks should not end the watch: say so, and try again.
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "qupid: {} (trying again in {secs}s)",
                    one_line(&e)
                );
            }
        }
        tokio::select! {
            () = interrupted.recv() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(secs)) => {}
        }
    }
}

/// Ctrl-C, listened for from the moment it is made.
struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn new() -> anyhow::Result<Interrupt> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = signal(SignalKind::interrupt())
                .map_err(|e| anyhow::anyhow!("cannot listen for Ctrl-C: {e}"))?;
            Ok(Interrupt { signal })
        }
        #[cfg(not(unix))]
        Ok(Interrupt {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            self.signal.recv().await;
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
