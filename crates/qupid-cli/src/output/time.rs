//! Times for people: relative to the ledger's clock ("in 12s", "3m ago"), and UTC dates.

use qupid::clock::Timestamp;

/// `at` relative to `now`: "in 12s", "3m ago", "2d ago", or "now" within a second.
pub(crate) fn relative(at: Timestamp, now: Timestamp) -> String {
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
pub(crate) fn utc(at: Timestamp) -> String {
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

/// `at` as a UTC time followed by its distance from `now`: `2026-05-01T12:00:00Z (3m ago)`.
pub(crate) fn both(at: Timestamp, now: Timestamp) -> String {
    format!("{} ({})", utc(at), relative(at, now))
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

    fn at(offset_ms: i64) -> Timestamp {
        Timestamp::from_millis(NOW.as_millis().checked_add_signed(offset_ms).unwrap())
    }

    #[test]
    fn relative_times_pick_the_largest_whole_unit() {
        assert_eq!(relative(at(12_400), NOW), "in 12s");
        assert_eq!(relative(at(-180_000), NOW), "3m ago");
        assert_eq!(relative(at(-2 * 86_400_000 - 5), NOW), "2d ago");
        assert_eq!(relative(at(5 * 3_600_000), NOW), "in 5h");
        assert_eq!(relative(at(-999), NOW), "now");
        assert_eq!(relative(at(999), NOW), "now");
        assert_eq!(relative(at(-59_999), NOW), "59s ago");
        assert_eq!(relative(at(-60_000), NOW), "1m ago");
    }

    #[test]
    fn utc_dates_match_known_instants() {
        assert_eq!(utc(Timestamp::from_millis(0)), "1970-01-01T00:00:00Z");
        assert_eq!(utc(NOW), "2023-11-14T22:13:20Z");
        // A leap day, and the last second of a year.
        assert_eq!(
            utc(Timestamp::from_millis(951_782_400_000)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            utc(Timestamp::from_millis(1_735_689_599_999)),
            "2024-12-31T23:59:59Z"
        );
        assert_eq!(both(at(-3_000), NOW), "2023-11-14T22:13:17Z (3s ago)");
    }
}
