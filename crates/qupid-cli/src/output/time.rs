//! Times for people: relative to the ledger's clock ("in 12s", "3m ago"), and UTC dates.

use qupid::clock::Timestamp;

/// `at` relative to `now` ("in 12s", "3m ago"), and `at` as a UTC date and time to the
/// second: the dashboard's own functions, so both write times alike.
pub(crate) use qupid_web::text::{relative, utc};

/// `at` as a UTC time followed by its distance from `now`: `2026-05-01T12:00:00Z (3m ago)`.
pub(crate) fn both(at: Timestamp, now: Timestamp) -> String {
    format!("{} ({})", utc(at), relative(at, now))
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
