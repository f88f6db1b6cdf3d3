//! The namespace's layout, its schema: every Redis key of a namespace by name, and the
//! namespace's own rules.
//!
//! All names start with `qupid:{NAMESPACE}:`, or, in a namespace split into `N` shards,
//! `qupid:{NAMESPACE:I/N}:` for shard `I`. The braces are a Redis Cluster *hash tag*: only the part
//! inside them picks the slot, so a whole shard lives in one slot and every script may touch
//! all of its keys. A namespace holds no braces and no `:` (see
//! [`check_namespace`](crate::ledger::check_namespace)), so the first `}` always closes the
//! tag, whatever a user key contains after it, and no shard's tag is another namespace's.

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
    /// The key names of `namespace`, which must already be valid, unsharded.
    pub(super) fn new(namespace: &str) -> Self {
        Self::with_tag(namespace)
    }

    /// The key names of shard `shard` of `namespace` split into `shards` (more than one):
    /// the tag says both, and the scripts draw the shard's tokens from it.
    pub(super) fn shard(namespace: &str, shard: usize, shards: usize) -> Self {
        Self::with_tag(&format!("{namespace}:{shard}/{shards}"))
    }

    fn with_tag(tag: &str) -> Self {
        let base = format!("qupid:{{{tag}}}:");
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

    /// The finish-time index of Completed records, or of Dead ones (`dead`).
    pub(super) fn finished(&self, dead: bool) -> &str {
        &self.fixed[if dead { 8 } else { 7 }]
    }
}

/// The key that says how many shards a namespace split into holds (absent: one).
pub(super) fn shards_key(namespace: &str) -> String {
    format!("qupid:{{{namespace}}}:shards")
}

/// The most shards a namespace may be split into.
pub(super) const MAX_SHARDS: u16 = 1024;

/// The shard of `key` in a namespace of `shards` shards: FNV-1a (64 bits) of the key's
/// bytes, modulo the count. Fixed forever: a key's shard must not change between versions.
pub(super) fn shard_of(key: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // The remainder is below `shards`, a usize.
    (h % shards as u64) as usize
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
        assert_eq!(k.finished(false), "qupid:{orders}:fin:completed");
        assert_eq!(k.finished(true), "qupid:{orders}:fin:dead");
        assert_eq!(k.record("a{b}\0c"), b"qupid:{orders}:r:a{b}\0c".to_vec());
        assert!(k.fixed().iter().all(|n| n.starts_with("qupid:{orders}:")));
    }

    #[test]
    fn shards_have_their_own_tags() {
        let k = Keys::shard("orders", 3, 16);
        assert_eq!(k.fixed()[0], "qupid:{orders:3/16}:token");
        assert_eq!(k.record("a"), b"qupid:{orders:3/16}:r:a".to_vec());
        assert_eq!(shards_key("orders"), "qupid:{orders}:shards");
    }

    #[test]
    fn a_key_s_shard_is_fixed() {
        // FNV-1a 64 of "" and "a" (published test vectors), so the spread never changes.
        assert_eq!(
            shard_of("", 1 << 20),
            (0xcbf2_9ce4_8422_2325u64 % (1 << 20)) as usize
        );
        assert_eq!(
            shard_of("a", 1 << 20),
            (0xaf63_dc4c_8601_ec8cu64 % (1 << 20)) as usize
        );
        assert_eq!(shard_of("anything", 1), 0);
        let mut seen = [0u32; 16];
        for i in 0..16_000 {
            seen[shard_of(&format!("orders/{i}"), 16)] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
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
