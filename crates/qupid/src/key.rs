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

/// A fingerprint of a record's content: an etag, an `updated_at`, a hash.
///
/// A completed key offered again with a *different* version is processed again; the same
/// version, or none, is a duplicate. Same rules as [`Key`]: non-empty, at most
/// [`MAX_KEY_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Version(Arc<str>);

impl Version {
    /// Checks `version` and makes a [`Version`] of it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidVersion`] if `version` is empty or longer than [`MAX_KEY_LEN`] bytes.
    pub fn new(version: impl AsRef<str>) -> Result<Self> {
        let v = version.as_ref();
        check("version", v, ErrorKind::InvalidVersion)?;
        Ok(Version(Arc::from(v)))
    }

    /// The version as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<u64> for Version {
    fn from(n: u64) -> Self {
        Version(Arc::from(n.to_string()))
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
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
    fn keys_deserialize_through_the_check() {
        let k: Key = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(k.as_str(), "a/b");
        assert!(serde_json::from_str::<Key>("\"\"").is_err());
    }
}
