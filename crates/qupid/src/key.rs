//! Keys, versions and entries: what a record is called and what it carries.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The longest key or version accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// A record's identity, chosen by the user (`"orders/123"`).
///
/// A key is non-empty UTF-8 of at most [`MAX_KEY_LEN`] bytes. Anything else is refused with
/// an [`ErrorKind::InvalidKey`] error, never truncated. Cloning a key is cheap (it is shared).
///
/// ```
/// use qupid::Key;
///
/// let key = Key::new("orders/123")?;
/// assert_eq!(key.as_str(), "orders/123");
/// assert!(Key::new("").is_err());
/// # Ok::<(), qupid::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Key(Arc<str>);

impl Key {
    /// Checks `key` and makes a [`Key`] of it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidKey`] if `key` is empty or longer than [`MAX_KEY_LEN`] bytes.
    pub fn new(key: impl AsRef<str>) -> Result<Self> {
        let key = key.as_ref();
        check("key", key, ErrorKind::InvalidKey)?;
        Ok(Key(Arc::from(key)))
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check(what: &str, s: &str, kind: ErrorKind) -> Result<()> {
    if s.is_empty() {
        return Err(Error::new(kind, format!("{what} must not be empty")));
    }
    if s.len() > MAX_KEY_LEN {
        return Err(Error::new(
            kind,
            format!(
                "{what} {} must be at most {MAX_KEY_LEN} bytes, found {} bytes",
                excerpt(s),
                s.len()
            ),
        ));
    }
    Ok(())
}

/// The start of `s`, quoted and escaped (control characters shown, not printed), fit to name a
/// key in an error or a log line however long or odd it is.
pub(crate) fn excerpt(s: &str) -> String {
    const CHARS: usize = 40;
    match s.char_indices().nth(CHARS) {
        Some((end, _)) => format!("{:?}…", &s[..end]),
        None => format!("{s:?}"),
    }
}

impl TryFrom<&str> for Key {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Key::new(s)
    }
}

impl TryFrom<String> for Key {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Key::new(s)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Key::new(s).map_err(serde::de::Error::custom)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A fingerprint of a record's content: opaque (an etag, a hash) or ordered (an
/// `updated_at`, a row version, a sequence number).
///
/// - **Opaque** ([`Version::new`]): a completed key offered again with a *different* version
///   is processed again; the same version, or none, is a duplicate. Any change counts, since
///   an opaque version cannot tell newer from older.
/// - **Ordered** ([`Version::ordered`]): as opaque, and moreover an offer *older* than the
///   newest version the ledger has accepted for the key is refused as
///   [outdated](crate::ledger::Offered::Outdated), whatever the key's state, so a stale
///   snapshot of a record (read before a newer version was processed) never replaces newer
///   output. Use it whenever the source has a number that grows with each change. Older and
///   newer are told apart only between ordered versions: against an opaque version (or
///   none), an ordered one is merely different. See
///   [ordered versions](crate::ledger#ordered-versions).
///
/// Same rules as [`Key`] for an opaque version: non-empty, at most [`MAX_KEY_LEN`] bytes.
/// Versions starting with U+0001 are reserved: that is how an ordered version is stored (a
/// fixed-width string, so every ledger orders it by plain comparison).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(Arc<str>);

/// How an ordered version starts when stored.
const ORDERED: &str = "\u{1}o";
/// Digits of a stored ordered version: every `u64` fits.
const ORDERED_DIGITS: usize = 20;

impl Version {
    /// Checks `version` and makes an opaque [`Version`] of it — or the ordered version it is
    /// the stored form of ([`as_str`](Version::as_str) of an ordered version).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidVersion`] if `version` is empty, longer than [`MAX_KEY_LEN`]
    /// bytes, or starts with U+0001 without being an ordered version's stored form.
    pub fn new(version: impl AsRef<str>) -> Result<Self> {
        let v = version.as_ref();
        check("version", v, ErrorKind::InvalidVersion)?;
        if v.starts_with('\u{1}') && parse_ordered(v).is_none() {
            return Err(Error::new(
                ErrorKind::InvalidVersion,
                format!(
                    "version {} starts with U+0001, which is reserved for ordered versions",
                    excerpt(v)
                ),
            ));
        }
        Ok(Version(Arc::from(v)))
    }

    /// An ordered version: `n` orders it among the key's versions (an `updated_at` in
    /// milliseconds, a row version, a sequence number). See [the type's docs](Version).
    ///
    /// ```
    /// use qupid::Version;
    ///
    /// let v = Version::ordered(1_700_000_000_123);
    /// assert_eq!(v.as_ordered(), Some(1_700_000_000_123));
    /// assert!(Version::ordered(9) < Version::ordered(10));
    /// assert_eq!(v.to_string(), "1700000000123");
    /// ```
    pub fn ordered(n: u64) -> Self {
        Version(Arc::from(format!(
            "{ORDERED}{n:0width$}",
            width = ORDERED_DIGITS
        )))
    }

    /// The number of an ordered version; `None` for an opaque one.
    pub fn as_ordered(&self) -> Option<u64> {
        parse_ordered(&self.0)
    }

    /// Whether this version is ordered.
    pub fn is_ordered(&self) -> bool {
        self.as_ordered().is_some()
    }

    /// The version as stored: an opaque version's own text, or an ordered version's
    /// fixed-width form (U+0001, `o`, 20 digits).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn parse_ordered(s: &str) -> Option<u64> {
    let digits = s.strip_prefix(ORDERED)?;
    if digits.len() != ORDERED_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl From<u64> for Version {
    /// An *opaque* version of the number's digits; see [`Version::ordered`] for one that
    /// orders.
    fn from(n: u64) -> Self {
        Version(Arc::from(n.to_string()))
    }
}

/// An ordered version is a JSON number, an opaque one a string.
impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.as_ordered() {
            Some(n) => s.serialize_u64(n),
            None => s.serialize_str(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a version: a string, or a number for an ordered version")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<Version, E> {
                Ok(Version::ordered(n))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Version, E> {
                Version::new(s).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An ordered version shows as its number, an opaque one as its text.
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_ordered() {
            Some(n) => n.fmt(f),
            None => f.write_str(&self.0),
        }
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_ordered() {
            Some(n) => write!(f, "Ordered({n})"),
            None => fmt::Debug::fmt(&*self.0, f),
        }
    }
}

/// A record to process: its key, an optional version and the user's payload.
///
/// The ledger stores only the key and version; the payload stays in the process, and a
/// record whose work was lost is simply polled again from its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    /// The record's identity.
    pub key: Key,
    /// The record's content fingerprint, if it has one.
    pub version: Option<Version>,
    /// The record itself.
    pub payload: T,
}

impl<T> Entry<T> {
    /// An entry with no version.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidKey`] if `key` is not a valid [`Key`].
    pub fn new(key: impl AsRef<str>, payload: T) -> Result<Self> {
        Ok(Entry {
            key: Key::new(key)?,
            version: None,
            payload,
        })
    }

    /// The same entry with `version` as its content fingerprint.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidVersion`] if `version` is not a valid [`Version`].
    pub fn with_version(mut self, version: impl AsRef<str>) -> Result<Self> {
        self.version = Some(Version::new(version)?);
        Ok(self)
    }

    /// The same entry with an ordered version ([`Version::ordered`]): an `updated_at`, a row
    /// version, a sequence number. An offer older than the newest version the ledger has
    /// accepted for the key is then refused, so stale snapshots never replace newer output.
    pub fn with_ordered_version(mut self, version: u64) -> Self {
        self.version = Some(Version::ordered(version));
        self
    }

    /// What the ledger is told about this entry.
    pub fn offer(&self) -> Offer {
        Offer {
            key: self.key.clone(),
            version: self.version.clone(),
        }
    }
}

/// What a ledger is offered: a key and its version, without the payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Offer {
    /// The key offered.
    pub key: Key,
    /// Its version, if any.
    pub version: Option<Version>,
}

impl Offer {
    /// An offer of `key` with no version.
    pub fn new(key: Key) -> Self {
        Offer { key, version: None }
    }

    /// The same offer with `version`.
    pub fn with_version(mut self, version: Version) -> Self {
        self.version = Some(version);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_not_truncated() {
        assert_eq!(Key::new("").unwrap_err().kind(), ErrorKind::InvalidKey);
        let long = "x".repeat(MAX_KEY_LEN + 1);
        let err = Key::new(&long).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey);
        assert!(err.to_string().contains("1025"), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("key \"{}\"…", "x".repeat(40))),
            "names the key by an excerpt: {err}"
        );
        let odd = Key::new(format!("bad\n{}", "y".repeat(2000))).unwrap_err();
        assert!(odd.to_string().contains(r#""bad\nyyy"#), "{odd}");
        assert_eq!(
            Key::new("x".repeat(MAX_KEY_LEN)).unwrap().as_str().len(),
            MAX_KEY_LEN
        );
        assert_eq!(Key::new("é/ü").unwrap().as_str(), "é/ü");
    }

    #[test]
    fn versions_are_checked() {
        assert_eq!(
            Version::new("").unwrap_err().kind(),
            ErrorKind::InvalidVersion
        );
        assert_eq!(Version::from(7).as_str(), "7");
    }

    #[test]
    fn ordered_versions_order_and_round_trip() {
        let v = Version::ordered(42);
        assert_eq!(v.as_ordered(), Some(42));
        assert!(v.is_ordered());
        assert_eq!(
            Version::new(v.as_str()).unwrap(),
            v,
            "its stored form reads back"
        );
        assert!(Version::ordered(u64::MAX) > Version::ordered(u64::MAX - 1));
        assert!(
            Version::ordered(99) < Version::ordered(100),
            "fixed width orders"
        );
        assert_eq!(
            Version::new("42").unwrap().as_ordered(),
            None,
            "digits are opaque"
        );
        assert_eq!(Version::from(42).as_ordered(), None);
        let reserved = Version::new("\u{1}oops").unwrap_err();
        assert_eq!(reserved.kind(), ErrorKind::InvalidVersion);
        assert!(reserved.to_string().contains("reserved"), "{reserved}");
        assert_eq!(serde_json::to_string(&v).unwrap(), "42");
        assert_eq!(serde_json::from_str::<Version>("42").unwrap(), v);
        let opaque = Version::new("etag-1").unwrap();
        assert_eq!(serde_json::to_string(&opaque).unwrap(), "\"etag-1\"");
        assert_eq!(
            serde_json::from_str::<Version>("\"etag-1\"").unwrap(),
            opaque
        );
        assert_eq!(format!("{v} {v:?}"), "42 Ordered(42)");
    }

    #[test]
    fn keys_deserialize_through_the_check() {
        let k: Key = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(k.as_str(), "a/b");
        assert!(serde_json::from_str::<Key>("\"\"").is_err());
    }
}
