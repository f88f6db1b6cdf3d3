//! The namespace's layout, its schema: every Redis key of a namespace by name, and the
//! namespace's own rules.
//!
//! All names start with `qupid:{NAMESPACE}:`. The braces are a Redis Cluster *hash tag*: only
//! the part inside them picks the slot, so a whole namespace lives in one slot and every
//! script may touch all of its keys. A namespace holds no braces (see
//! [`check_namespace`](crate::ledger::check_namespace)), so the first `}` always closes the
//! tag, whatever a user key contains after it.

use crate::error::Result;

/// The names of one namespace's keys.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// `qupid:{ns}:r:`, the prefix of every record; the user key follows it verbatim.
    record_prefix: Vec<u8>,
    /// The keys every script is given, in the order the Lua prelude expects (`KEYS[1..10]`).
    fixed: [String; FIXED],
}

/// How many namespace-wide keys every script takes before the batch's record keys.
pub(super) const FIXED: usize = 10;

impl Keys {
    /// The key names of `namespace`, which must already be valid.
    pub(super) fn new(namespace: &str) -> Self {
        let base = format!("qupid:{{{namespace}}}:");
        let k = |suffix: &str| format!("{base}{suffix}");
        Keys {
            record_prefix: k("r:").into_bytes(),
            fixed: [
                k("token"),
                k("clock_offset_ms"),
                k("clock_pinned_ms"),
                k("idx:queued"),
                k("idx:running"),
                k("idx:completed"),
                k("idx:dead"),
                k("fin:completed"),
                k("fin:dead"),
                k("layout"),
            ],
        }
    }

    /// The record of `key`: the prefix followed by the key's bytes, unescaped (Redis keys
    /// are binary-safe).
    pub(super) fn record(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.record_prefix.len() + key.len());
        k.extend_from_slice(&self.record_prefix);
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// The prefix of records (passed to every script as `ARGV[1]`).
    pub(super) fn record_prefix(&self) -> &[u8] {
        &self.record_prefix
    }

    /// The namespace-wide keys, in the order the scripts expect.
    pub(super) fn fixed(&self) -> &[String; FIXED] {
        &self.fixed
    }
}

/// Checks a namespace: the rule every ledger shares (a hash tag must hold no braces, and
/// this one holds none).
pub(super) fn check_namespace(namespace: &str) -> Result<()> {
    crate::ledger::check_namespace(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_one_hash_tag() {
        let k = Keys::new("orders");
        assert_eq!(k.fixed()[0], "qupid:{orders}:token");
        assert_eq!(k.fixed()[1], "qupid:{orders}:clock_offset_ms");
        assert_eq!(k.fixed()[2], "qupid:{orders}:clock_pinned_ms");
        assert_eq!(k.fixed()[9], "qupid:{orders}:layout");
        assert_eq!(k.record("a{b}\0c"), b"qupid:{orders}:r:a{b}\0c".to_vec());
        assert!(k.fixed().iter().all(|n| n.starts_with("qupid:{orders}:")));
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(check_namespace("orders_eu_1").is_ok());
        for bad in ["", "a{b", "a}b", "tab\there", "orders-eu"] {
            let err = check_namespace(bad).expect_err(bad);
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{bad:?}");
        }
    }
}
