//! Durations on the command line: `90s`, `15m`, `12h`, `7d`, `2w`, or several (`1d12h`).

/// Parses a duration: one or more `<number><unit>` parts, units `s`, `m`, `h`, `d`, `w`.
/// Used as a clap value parser, so the error is shown as a usage error (exit 2). The
/// dashboard reads durations with the same function.
pub(crate) use qupid_web::text::parse_duration as parse;

/// A duration the way [`parse`] reads it, in its largest exact unit up to days: `7d`, `90s`,
/// `36h`.
pub(crate) use qupid_web::text::format_duration as format;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
