//! Stopping on process signals: the first one stops gracefully, the second skips the drain.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::builder::Signals;

/// Listens for `which` signals: the first cancels `stop`, the second `hard`.
pub(super) fn listen(
    which: Signals,
    stop: CancellationToken,
    hard: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = match Listener::new(which) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for stop signals");
                return;
            }
        };
        let Some(name) = next.signal().await else {
            return;
        };
        tracing::info!(signal = name, "stopping (a second signal skips the drain)");
        stop.cancel();
        if let Some(name) = next.signal().await {
            tracing::warn!(signal = name, "second signal: cancelling running attempts");
            hard.cancel();
        }
    })
}

struct Listener {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Listener {
    fn new(which: Signals) -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let term = match which {
                Signals::All => Some(signal(SignalKind::terminate())?),
                Signals::CtrlC => None,
            };
            Ok(Listener { term })
        }
        #[cfg(not(unix))]
        {
            let _ = which;
            Ok(Listener {})
        }
    }

    /// The name of the next signal received, or `None` if none can come any more.
    async fn signal(&mut self) -> Option<&'static str> {
        #[cfg(unix)]
        if let Some(term) = &mut self.term {
            return tokio::select! {
                r = tokio::signal::ctrl_c() => r.ok().map(|()| "SIGINT"),
                t = term.recv() => t.map(|()| "SIGTERM"),
            };
        }
        tokio::signal::ctrl_c().await.ok().map(|()| "SIGINT")
    }
}
