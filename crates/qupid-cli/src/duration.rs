//! Durations on the command line: `90s`, `15m`, `12h`, `7d`, `2w`, or several (`1d12h`).

use std::time::Duration;

/// The units and their length in seconds, shortest first.
const UNITS: [(char, u64); 5] = [
    ('s', 1),
    ('m', 60),
    ('h', 3_600),
    ('d', 86_400),
    ('w', 604_800),
];

/// Parses a duration: one or more `<number><unit>` parts, units `s`, `m`, `h`, `d`, `w`.
///
/// Used as a clap value parser, so the error is shown as a usage error (exit 2).
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
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

/// A duration the way [`parse`] reads it, in its largest exact unit up to days (weeks read
/// less plainly than days in messages: `14d`, not `2w`): `7d`, `90s`, `36h`.
pub(crate) fn format(d: Duration) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_and_combinations_parse() {
        let secs = |s: &str| parse(s).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("15m"), Ok(900));
        assert_eq!(secs("12h"), Ok(43_200));
        assert_eq!(secs("7d"), Ok(604_800));
        assert_eq!(secs("2w"), Ok(1_209_600));
        assert_eq!(secs("1d12h"), Ok(129_600));
        assert_eq!(secs("0s"), Ok(0));
        assert_eq!(secs("7D"), Ok(604_800));
    }

    #[test]
    fn bad_durations_say_what_was_expected() {
        for bad in ["", "7", "d", "7x", "-7d", "7 d", "1.5h", "7dd", "7d?"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("expected a duration"), "{bad:?}: {err}");
        }
        assert!(parse("99999999999999999999w").is_err());
        assert!(parse("40000000000000w").unwrap_err().contains("too long"));
    }

    #[test]
    fn formatting_uses_the_largest_exact_unit() {
        assert_eq!(format(Duration::from_secs(604_800)), "7d");
        assert_eq!(format(Duration::from_secs(1_209_600)), "14d");
        assert_eq!(format(Duration::from_secs(6 * 86_400)), "6d");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(129_600)), "36h");
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
