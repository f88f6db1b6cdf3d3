//! Text in and out: keys shown safely in HTML, times and durations for people, and URLs
//! read strictly (a key that is not UTF-8 is refused, never mangled).
//!
//! Public: the formats the dashboard shares with the `qupid` CLI, so both write times and
//! read durations alike — [`relative`], [`utc`], [`parse_duration`], [`format_duration`].

use std::fmt::Write as _;
use std::time::Duration;

use maud::{Markup, PreEscaped, Render};
use qupid::clock::Timestamp;

/// Appends `s` with `&`, `<`, `>`, `"` and `'` replaced by entities.
fn push_html(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Characters that change how text around them shows without showing themselves:
/// zero-width characters, bidirectional overrides, line and paragraph separators (the CLI
/// escapes the same ones).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// A key, version or error message shown in a page: HTML-escaped, with control and
/// invisible characters written the way Rust writes them (`\n`, `\t`, `\u{1b}`) inside a
/// `<span class="esc">` that marks them as escapes, and backslashes doubled — as the CLI
/// shows keys, so that what a page shows can be told apart from a key that holds a
/// backslash and an `n`. At most `max` characters of `s` are shown, `…` marking a cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shown<'a> {
    s: &'a str,
    max: usize,
}

impl<'a> Shown<'a> {
    /// All of `s`.
    pub(crate) fn all(s: &'a str) -> Self {
        Shown { s, max: usize::MAX }
    }

    /// The first `max` characters of `s`.
    pub(crate) fn short(s: &'a str, max: usize) -> Self {
        Shown { s, max }
    }
}

impl Render for Shown<'_> {
    fn render_to(&self, out: &mut String) {
        for (i, c) in self.s.chars().enumerate() {
            if i == self.max {
                out.push('…');
                return;
            }
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() || is_invisible(c) => {
                    let _ = write!(
                        out,
                        "<span class=\"esc\" title=\"U+{:04X}\">{}</span>",
                        u32::from(c),
                        c.escape_default()
                    );
                }
                c => push_html(out, c.encode_utf8(&mut [0; 4])),
            }
        }
    }
}

/// `s` as plain text (a page's title): escapes as [`Shown`] writes them, without markup.
pub(crate) fn plain(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || is_invisible(c) => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// Renders `s` shown in full.
pub(crate) fn shown(s: &str) -> Markup {
    PreEscaped(Shown::all(s).render().into_string())
}

/// `at` relative to `now`: "in 12s", "3m ago", "2d ago", or "now" within a second.
pub fn relative(at: Timestamp, now: Timestamp) -> String {
    let (ms, future) = if at >= now {
        (at.as_millis() - now.as_millis(), true)
    } else {
        (now.as_millis() - at.as_millis(), false)
    };
    if ms < 1_000 {
        return "now".to_owned();
    }
    let span = span(ms / 1_000);
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A length of time in its largest whole unit: `59s`, `3m`, `23h`, `2d`.
fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// `at` as a UTC date and time to the second: `2026-05-01T12:00:00Z`.
pub fn utc(at: Timestamp) -> String {
    let secs = at.as_millis() / 1_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The units of a duration and their length in seconds, shortest first.
const UNITS: [(char, u64); 5] = [
    ('s', 1),
    ('m', 60),
    ('h', 3_600),
    ('d', 86_400),
    ('w', 604_800),
];

/// Parses a duration as the CLI does: one or more `<number><unit>` parts, units `s`, `m`,
/// `h`, `d`, `w` (`90s`, `7d`, `1d12h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "expected a duration like 90s, 15m, 12h, 7d or 2w (or several, like 1d12h), found \
             {text:?}"
        )
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let (number, after) = rest.split_at(digits);
        let mut chars = after.chars();
        let unit = chars.next().ok_or_else(bad)?;
        let (_, secs) = UNITS
            .iter()
            .find(|(u, _)| *u == unit.to_ascii_lowercase())
            .ok_or_else(bad)?;
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(*secs)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| format!("the duration {text:?} is too long"))?;
        rest = chars.as_str();
    }
    Ok(Duration::from_secs(total))
}

/// A duration the way [`parse_duration`] reads it, in its largest exact unit up to days.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let (unit, size) = UNITS[..4]
        .iter()
        .rev()
        .find(|(_, size)| secs.is_multiple_of(*size))
        .copied()
        .unwrap_or(UNITS[0]);
    format!("{}{unit}", secs / size)
}

/// A number of milliseconds for people: `500ms`, `2s`, `1.5s`.
pub(crate) fn format_duration_ms(ms: u128) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{}.{}s", ms / 1_000, ms % 1_000 / 100)
    }
}

/// `s` percent-encoded for a query string: everything but `A-Z a-z 0-9 - _ . ~` is escaped,
/// so a key holding `&`, `=`, `#`, `+` or a newline survives the round trip.
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A query string or form body (`a=1&b=x%20y`), read strictly: `+` is a space, `%XX` a
/// byte, and the decoded bytes must be UTF-8 — a key can only be UTF-8, so anything else is
/// a malformed request, not a key to look up.
pub(crate) fn parse_pairs(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

fn decode(s: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = [it.next(), it.next()];
                let byte = match hex {
                    [Some(h), Some(l)] => hex_value(h).zip(hex_value(l)).map(|(h, l)| h << 4 | l),
                    _ => None,
                };
                bytes.push(
                    byte.ok_or_else(|| {
                        format!("malformed percent-encoding in the request: {s:?}")
                    })?,
                );
            }
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes)
        .map_err(|_| format!("the request's {s:?} does not decode to UTF-8 text"))
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_text_is_escaped_and_control_characters_are_visible() {
        let s = Shown::all("<b>\"&'\n\\n\u{1b}\u{202E}")
            .render()
            .into_string();
        assert_eq!(
            s,
            "&lt;b&gt;&quot;&amp;&#39;<span class=\"esc\" title=\"U+000A\">\\n</span>\\\\n\
             <span class=\"esc\" title=\"U+001B\">\\u{1b}</span>\
             <span class=\"esc\" title=\"U+202E\">\\u{202e}</span>"
        );
        assert_eq!(Shown::short("abcdef", 3).render().into_string(), "abc…");
        assert_eq!(Shown::short("abc", 3).render().into_string(), "abc");
    }

    #[test]
    fn queries_decode_strictly() {
        assert_eq!(
            parse_pairs("key=a%2Fb+c&x=&flag").unwrap(),
            [
                ("key".into(), "a/b c".into()),
                ("x".into(), String::new()),
                ("flag".into(), String::new())
            ]
        );
        assert!(parse_pairs("key=%FF").is_err());
        assert!(parse_pairs("key=%4").is_err());
        assert!(parse_pairs("key=%zz").is_err());
        let odd = "a&b=c#d+e\n/é🦀%";
        assert_eq!(
            parse_pairs(&format!("k={}", url_encode(odd))).unwrap(),
            [("k".into(), odd.into())]
        );
    }

    #[test]
    fn durations_and_times_read_as_in_the_cli() {
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(129_600)));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999w").is_err());
        assert_eq!(format_duration(Duration::from_secs(604_800)), "7d");
        assert_eq!(utc(Timestamp::from_millis(0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            relative(
                Timestamp::from_millis(5_000),
                Timestamp::from_millis(65_000)
            ),
            "1m ago"
        );
        assert_eq!(
            relative(
                Timestamp::from_millis(20_000),
                Timestamp::from_millis(8_000)
            ),
            "in 12s"
        );
    }
}
