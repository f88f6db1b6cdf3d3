//! A save's stamp: the version it carries and the fencing token it was made under.

use std::fmt;

use crate::key::Version;
use crate::ledger::Token;
use crate::pipeline::Attempt;

/// The user-metadata key of the fencing token (`x-amz-meta-qupid-token` on S3).
pub(crate) const TOKEN_KEY: &str = "qupid-token";
/// The user-metadata key of the version (`x-amz-meta-qupid-version` on S3).
pub(crate) const VERSION_KEY: &str = "qupid-version";

const ORDERED_PREFIX: &str = "ordered:";
const OPAQUE_PREFIX: &str = "opaque:";

/// What a save is stamped with: the version of the record it was made from and the fencing
/// token of the lease it was made under. The [`ObjectSink`](super::ObjectSink) keeps it in
/// the object's user metadata and writes only over an object whose stamp is not newer.
///
/// # Which stamp is newer
///
/// - When both versions are **ordered** ([`Version::ordered`]), the higher version is newer;
///   for the same version, the higher token (the later lease) is newer.
/// - Otherwise (an **opaque** version, or none, on either side) only the tokens order: a
///   later lease has a higher token. An opaque version tells that content changed, not which
///   content is newer, so a stale snapshot processed under a later lease wins — use ordered
///   versions when the source has a number that grows with each change.
///
/// Equal stamps are not older than each other: saving again with the same stamp writes again
/// (the same holder repeating its save).
///
/// Tokens order only within one ledger's life: a ledger that is wiped or replaced starts its
/// tokens again, and the objects saved before would look newer than anything after (with
/// ordered versions, only for the same version).
///
/// ```
/// use qupid::ledger::Token;
/// use qupid::sink::Stamp;
/// use qupid::Version;
///
/// let v1 = Stamp::new(Some(Version::ordered(1)), Token::new(9));
/// let v2 = Stamp::new(Some(Version::ordered(2)), Token::new(3));
/// assert!(v1.is_older_than(&v2), "an ordered version orders before the token");
///
/// let opaque = Stamp::new(Some(Version::new("etag-a")?), Token::new(4));
/// assert!(v2.is_older_than(&opaque), "with an opaque version, only tokens order");
/// # Ok::<(), qupid::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// The version of the record the output was made from, if it has one.
    pub version: Option<Version>,
    /// The fencing token of the lease the output was made under.
    pub token: Token,
}

impl Stamp {
    /// A stamp of `version` and `token`.
    pub fn new(version: Option<Version>, token: Token) -> Self {
        Stamp { version, token }
    }

    /// The stamp of a pipeline's attempt: its entry's version and its lease's token.
    pub fn of<T>(attempt: &Attempt<T>) -> Self {
        Stamp {
            version: attempt.version().cloned(),
            token: attempt.token(),
        }
    }

    /// Whether this stamp is older than `other` (see [which stamp is newer](Stamp#which-stamp-is-newer)).
    pub fn is_older_than(&self, other: &Stamp) -> bool {
        let ordered = |s: &Stamp| s.version.as_ref().and_then(Version::as_ordered);
        match (ordered(self), ordered(other)) {
            (Some(mine), Some(theirs)) => (mine, self.token.0) < (theirs, other.token.0),
            _ => self.token.0 < other.token.0,
        }
    }

    /// The user metadata this stamp is kept as: `(key, value)` pairs.
    pub(crate) fn to_metadata(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![(TOKEN_KEY, self.token.0.to_string())];
        if let Some(v) = &self.version {
            let encoded = match v.as_ordered() {
                Some(n) => format!("{ORDERED_PREFIX}{n}"),
                None => format!("{OPAQUE_PREFIX}{}", percent_encode(v.as_str())),
            };
            pairs.push((VERSION_KEY, encoded));
        }
        pairs
    }

    /// The stamp kept in an object's metadata, read with `get(key)`: `Ok(None)` for an
    /// object without one (written by something else).
    pub(crate) fn from_metadata<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<Stamp>, String> {
        let token = match get(TOKEN_KEY) {
            Some(t) => Token(
                t.trim()
                    .parse()
                    .map_err(|_| format!("{TOKEN_KEY} is {t:?}, not a number"))?,
            ),
            None if get(VERSION_KEY).is_some() => {
                return Err(format!("{VERSION_KEY} is set but {TOKEN_KEY} is missing"))
            }
            None => return Ok(None),
        };
        let version = match get(VERSION_KEY).map(str::trim) {
            None => None,
            Some(v) => Some(decode_version(v).ok_or_else(|| {
                format!("{VERSION_KEY} is {v:?}, not `ordered:N` or `opaque:TEXT`")
            })?),
        };
        Ok(Some(Stamp { version, token }))
    }
}

fn decode_version(v: &str) -> Option<Version> {
    if let Some(n) = v.strip_prefix(ORDERED_PREFIX) {
        return n.parse().ok().map(Version::ordered);
    }
    let text = percent_decode(v.strip_prefix(OPAQUE_PREFIX)?)?;
    Version::new(text).ok().filter(|v| !v.is_ordered())
}

/// Shows the version as [`Version`] does (an ordered one as its number) and the token.
impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "version {v}, token {}", self.token),
            None => write!(f, "no version, token {}", self.token),
        }
    }
}

/// HTTP header values (S3 keeps user metadata in headers) are visible ASCII, and S3 trims
/// them: everything else in an opaque version is kept as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/+=@,".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn stamp(v: Option<&str>, t: u64) -> Stamp {
        let version = v.map(|v| match v.parse::<u64>() {
            Ok(n) => Version::ordered(n),
            Err(_) => Version::new(v).unwrap(),
        });
        Stamp::new(version, Token(t))
    }

    #[test]
    fn ordered_versions_order_first_then_tokens() {
        assert!(stamp(Some("1"), 9).is_older_than(&stamp(Some("2"), 1)));
        assert!(!stamp(Some("2"), 1).is_older_than(&stamp(Some("1"), 9)));
        assert!(stamp(Some("2"), 1).is_older_than(&stamp(Some("2"), 2)));
        assert!(!stamp(Some("2"), 2).is_older_than(&stamp(Some("2"), 2)));
    }

    #[test]
    fn opaque_or_missing_versions_order_by_token() {
        assert!(stamp(Some("b"), 1).is_older_than(&stamp(Some("a"), 2)));
        assert!(!stamp(Some("a"), 2).is_older_than(&stamp(Some("b"), 1)));
        assert!(stamp(None, 1).is_older_than(&stamp(None, 2)));
        assert!(stamp(Some("5"), 1).is_older_than(&stamp(Some("x"), 2)));
        assert!(stamp(Some("5"), 3).is_older_than(&stamp(None, 4)));
        assert!(!stamp(Some("5"), 4).is_older_than(&stamp(None, 3)));
    }

    fn round_trip(s: &Stamp) -> Option<Stamp> {
        let meta: HashMap<&str, String> = s.to_metadata().into_iter().collect();
        Stamp::from_metadata(|k| meta.get(k).map(String::as_str)).unwrap()
    }

    #[test]
    fn metadata_round_trips_and_stays_visible_ascii() {
        for s in [
            stamp(None, 0),
            stamp(Some("42"), 7),
            Stamp::new(Some(Version::ordered(u64::MAX)), Token(u64::MAX)),
            stamp(Some("W/\"etag 1\""), 3),
            stamp(Some("é%\n\u{1}x"), 3),
            stamp(Some("ordered:5"), 1),
        ] {
            for (_, value) in s.to_metadata() {
                assert!(value.bytes().all(|b| b.is_ascii_graphic()), "{value:?}");
            }
            assert_eq!(round_trip(&s), Some(s.clone()));
        }
        let opaque_digits = Stamp::new(Some(Version::new("42").unwrap()), Token(1));
        assert_eq!(round_trip(&opaque_digits), Some(opaque_digits.clone()));
        assert_eq!(
            opaque_digits.to_metadata()[1].1,
            "opaque:42",
            "digits stay opaque"
        );
    }

    #[test]
    fn foreign_and_broken_metadata() {
        assert_eq!(Stamp::from_metadata(|_| None), Ok(None));
        let bad = |token: Option<&'static str>, version: Option<&'static str>| {
            Stamp::from_metadata(move |k| match k {
                TOKEN_KEY => token,
                VERSION_KEY => version,
                _ => None,
            })
        };
        assert!(bad(Some("x"), None).unwrap_err().contains("not a number"));
        assert!(bad(None, Some("ordered:1"))
            .unwrap_err()
            .contains("missing"));
        assert!(bad(Some("1"), Some("v1")).is_err());
        assert!(bad(Some("1"), Some("opaque:%zz")).is_err());
        assert!(bad(Some("1"), Some("opaque:")).is_err());
        assert!(bad(Some("1"), Some("ordered:-1")).is_err());
        assert_eq!(
            bad(Some(" 12 "), Some("ordered:3")).unwrap(),
            Some(stamp(Some("3"), 12))
        );
    }
}
