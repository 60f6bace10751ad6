//! Calendar dates for API answers, from days since 1970-01-01 (UTC).

/// `YYYY-MM-DD` of day `days` since 1970-01-01, in the proleptic Gregorian calendar.
pub(crate) fn iso_date(days: i64) -> String {
    let (year, month, day) = airlock_model::clock::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::iso_date;

    #[test]
    fn days_since_the_epoch_are_calendar_dates() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(-1), "1969-12-31");
        assert_eq!(iso_date(59), "1970-03-01");
        // 2000 was a leap year (divisible by 400), 2100 will not be.
        assert_eq!(iso_date(11_016), "2000-02-29");
        assert_eq!(iso_date(47_540), "2100-02-28");
        assert_eq!(iso_date(47_541), "2100-03-01");
        assert_eq!(iso_date(20_428), "2025-12-06");
    }
}
