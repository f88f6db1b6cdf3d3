//! The ledger a command works on: opened from its URL, with errors that name the URL.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use qupid::clock::Timestamp;
use qupid::ledger::{ListQuery, Page, Purged, Record, Removed, Retried, Stats};
use qupid::{AnyLedger, Key, LedgerAdmin, Retention, State};

/// How many records one `list` call fetches when a command pages through a whole state.
const SCAN_PAGE: usize = 1_000;

/// An open ledger and how to talk about it.
#[derive(Debug)]
pub(crate) struct Target {
    ledger: Arc<AnyLedger>,
    /// The URL with any password hidden: safe to print.
    pub(crate) url: String,
    /// The namespace, for the ledgers that have one (Redis, PostgreSQL).
    pub(crate) namespace: Option<String>,
}

/// What a command does to the ledger, so how it opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Looks only (`stats`, `list`, `show`, `purge --dry-run`): opened read-only, so opening
    /// creates, migrates and changes nothing, and a place with no ledger is an error.
    Read,
    /// Changes records (`remove`, `retry`, `purge`): opened read-write, which creates the
    /// schema of a new namespace and migrates an older one, as a pipeline does.
    Write,
}

impl Target {
    /// Opens the ledger `url` names, read-only for [`Access::Read`]. A SQLite file must exist
    /// already: a mistyped path must not quietly create an empty ledger.
    pub(crate) async fn open(url: &str, namespace: &str, access: Access) -> anyhow::Result<Target> {
        let shown = redact(url);
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        if scheme == "sqlite" && access == Access::Write {
            // (Read-only, the library says there is no ledger.)
            if let Some(path) = sqlite_path(url) {
                if !path.exists() {
                    anyhow::bail!(
                        "cannot open the ledger at {shown}: there is no file {} (the qupid \
                         tool never creates a ledger; check the path)",
                        path.display()
                    );
                }
            }
        }
        let opened = match access {
            Access::Read => AnyLedger::open_read_only(url, namespace).await,
            Access::Write => AnyLedger::open(url, namespace).await,
        };
        let ledger = opened.map_err(|e| {
            let msg = e.to_string();
            if e.kind() == qupid::ErrorKind::NotFound {
                // "no qupid ledger here: …", naming the file or the namespace and server.
                anyhow!("{msg}")
            } else if msg.contains(&shown) {
                anyhow!("cannot open the ledger: {msg}")
            } else {
                anyhow!("cannot open the ledger at {shown}: {msg}")
            }
        })?;
        let namespace = matches!(
            scheme.as_str(),
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" | "postgres" | "postgresql"
        )
        .then(|| namespace.to_owned());
        Ok(Target {
            ledger: Arc::new(ledger),
            url: shown,
            namespace,
        })
    }

    /// The ledger itself, shared: for the dashboard.
    pub(crate) fn ledger(&self) -> Arc<AnyLedger> {
        self.ledger.clone()
    }

    /// A ledger error, naming the URL unless the message does already.
    fn fail(&self, doing: &str, e: qupid::Error) -> anyhow::Error {
        let msg = e.to_string();
        if msg.contains(&self.url) {
            anyhow!("{doing}: {msg}")
        } else {
            anyhow!("{doing} in the ledger at {}: {msg}", self.url)
        }
    }

    /// The ledger's clock.
    pub(crate) async fn now(&self) -> anyhow::Result<Timestamp> {
        let r = self.ledger.now().await;
        r.map_err(|e| self.fail("reading the clock", e))
    }

    /// Counts per state.
    pub(crate) async fn stats(&self) -> anyhow::Result<Stats> {
        let r = self.ledger.stats().await;
        r.map_err(|e| self.fail("counting records", e))
    }

    /// One page of a state.
    pub(crate) async fn list(&self, query: &ListQuery) -> anyhow::Result<Page> {
        let r = self.ledger.list(query).await;
        r.map_err(|e| self.fail("listing records", e))
    }

    /// One key's record.
    pub(crate) async fn get(&self, key: &Key) -> anyhow::Result<Option<Record>> {
        let r = self.ledger.get(key).await;
        r.map_err(|e| self.fail("reading a record", e))
    }

    /// Removes keys.
    pub(crate) async fn remove(&self, keys: &[Key], force: bool) -> anyhow::Result<Vec<Removed>> {
        let r = self.ledger.remove(keys, force).await;
        r.map_err(|e| self.fail("removing records", e))
    }

    /// Retries dead keys.
    pub(crate) async fn retry(&self, keys: &[Key]) -> anyhow::Result<Vec<Retried>> {
        let r = self.ledger.retry(keys).await;
        r.map_err(|e| self.fail("retrying records", e))
    }

    /// Purges by `retention`.
    pub(crate) async fn purge(&self, retention: &Retention) -> anyhow::Result<Purged> {
        let r = self.ledger.purge(retention).await;
        r.map_err(|e| self.fail("purging records", e))
    }

    /// Calls `f` on every record in `state`, a page at a time, in key order.
    pub(crate) async fn scan(
        &self,
        state: State,
        mut f: impl FnMut(&Record),
    ) -> anyhow::Result<()> {
        let mut query = ListQuery::new(state).limit(SCAN_PAGE);
        loop {
            let page = self.list(&query).await?;
            page.records.iter().for_each(&mut f);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(()),
            }
        }
    }
}

/// A key from the command line, checked.
pub(crate) fn key(s: &str) -> anyhow::Result<Key> {
    Key::new(s).map_err(|e| anyhow!("{e}: {s:?} cannot be a key"))
}

/// Keys from the command line, checked, each once, in the order first given (a key given
/// twice would otherwise be "not found" the second time).
pub(crate) fn keys(args: &[String]) -> anyhow::Result<Vec<Key>> {
    let mut seen = std::collections::HashSet::new();
    let mut keys = Vec::with_capacity(args.len());
    for arg in args {
        if seen.insert(arg.as_str()) {
            keys.push(key(arg)?);
        }
    }
    Ok(keys)
}

/// The file a `sqlite:` URL names, read the way the SQLite ledger reads it (`sqlite://PATH`
/// or `sqlite:PATH`, `%XX` escapes, parameters after `?`); `None` if it cannot be read, in
/// which case the ledger itself says what is wrong.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.get(7..)?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    let mut bytes = Vec::with_capacity(path.len());
    let mut it = path.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next()?, it.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    let path = String::from_utf8(bytes).ok()?;
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

/// `url` with any password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    qupid::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://:s3cret@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact("rediss://user:p@ss@h/"), "rediss://user:***@h/");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://h/db?user=u&password=s3cret&x=1"),
            "postgres://h/db?user=u&password=***&x=1"
        );
        assert_eq!(
            redact("host=h user=u password=s3cret dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn sqlite_paths_are_read_like_the_ledger_reads_them() {
        assert_eq!(sqlite_path("sqlite://a.db"), Some("a.db".into()));
        assert_eq!(
            sqlite_path("sqlite:///var/x.db?synchronous=full"),
            Some("/var/x.db".into())
        );
        assert_eq!(
            sqlite_path("sqlite:my%20file.db"),
            Some("my file.db".into())
        );
        assert_eq!(sqlite_path("sqlite://"), None);
        assert_eq!(sqlite_path("sqlite://:memory:"), None);
        assert_eq!(sqlite_path("sqlite://bad%zz"), None);
    }
}
