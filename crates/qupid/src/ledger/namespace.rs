//! Namespaces: one queue's share of a shared ledger.

use crate::error::{Error, Result};

/// The longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 48;

/// The namespace the CLI and the examples use when none is given (`--namespace`, or the
/// `QUPID_NAMESPACE` variable).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Checks a namespace the same way for every ledger: 1 to [`MAX_NAMESPACE_LEN`] characters
/// of `a-z`, `0-9` and `_`.
///
/// The rule is the narrowest any ledger needs (a PostgreSQL namespace names a schema, a
/// Redis one a hash tag), applied to all of them, so a namespace that works on one ledger
/// works on every other, and a bad one is refused before anything is opened.
/// [`AnyLedger::open`](super::AnyLedger::open) checks it for every URL, memory and SQLite
/// included.
///
/// ```
/// use qupid::ledger::check_namespace;
///
/// assert!(check_namespace("orders_eu").is_ok());
/// assert!(check_namespace("orders-eu").is_err());
/// ```
///
/// # Errors
///
/// [`ErrorKind::Config`](crate::ErrorKind::Config), saying what is allowed and what was
/// found.
pub fn check_namespace(namespace: &str) -> Result<()> {
    let ok = !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_LEN
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "expected a namespace of 1 to {MAX_NAMESPACE_LEN} characters of a-z, 0-9 and _, \
             found {}",
            crate::key::excerpt(namespace)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_ledger() {
        for ok in [
            "a",
            "orders",
            "orders_eu_2",
            DEFAULT_NAMESPACE,
            &"n".repeat(48),
        ] {
            assert!(check_namespace(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Orders",
            "orders-eu",
            "a b",
            "x;drop",
            "{ns}",
            "é",
            &"n".repeat(49),
        ] {
            let e = check_namespace(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Config);
            assert!(e.to_string().contains("a-z, 0-9 and _"), "{e}");
        }
    }
}
