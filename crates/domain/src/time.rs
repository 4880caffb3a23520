//! Time as the domain sees it: Unix milliseconds handed in by the caller,
//! and the civil day (UTC) that a packet id carries.

/// Milliseconds in a civil day (UTC has no leap seconds in Unix time).
pub const DAY_MS: i64 = 86_400_000;

/// A point in time: milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

impl Millis {
    pub fn plus_seconds(self, seconds: u32) -> Millis {
        Millis(self.0.saturating_add(i64::from(seconds) * 1000))
    }

    /// The UTC civil date of this instant as `yyyymmdd`.
    pub fn civil_day(self) -> u32 {
        let days = self.0.div_euclid(DAY_MS);
        let (year, month, day) = civil_from_days(days);
        // Years outside 0..=9999 cannot be written as 8 digits; clamp, since a
        // clock that far off is a configuration error reported elsewhere.
        let year = year.clamp(0, 9999) as u32;
        year * 10_000 + month * 100 + day
    }
}

/// The first instant of the UTC civil day `yyyymmdd` (the inverse of
/// `Millis::civil_day` for a valid day).
pub fn civil_day_start(yyyymmdd: u32) -> Millis {
    let (year, month, day) = (i64::from(yyyymmdd / 10_000), i64::from(yyyymmdd / 100 % 100), i64::from(yyyymmdd % 100));
    Millis(days_from_civil(year, month, day) * DAY_MS)
}

/// (year, month, day) to days since 1970-01-01, after Howard Hinnant's
/// `days_from_civil`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's
/// `civil_from_days` (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether `yyyymmdd` names a real calendar date.
pub fn is_valid_civil_day(yyyymmdd: u32) -> bool {
    let (year, month, day) = (yyyymmdd / 10_000, yyyymmdd / 100 % 100, yyyymmdd % 100);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1000..=9999).contains(&year) && (1..=days_in_month).contains(&day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(Millis(0).civil_day(), 19_700_101);
        // 2017-01-28 00:00:00 UTC, the Spring Festival of WeChat's record.
        assert_eq!(Millis(1_485_561_600_000).civil_day(), 20_170_128);
        assert_eq!(Millis(1_485_561_600_000 - 1).civil_day(), 20_170_127);
        // 2024-02-29, a leap day.
        assert_eq!(Millis(1_709_164_800_000).civil_day(), 20_240_229);
        assert!(is_valid_civil_day(20_240_229));
        assert!(!is_valid_civil_day(20_230_229));
        assert!(!is_valid_civil_day(20_231_301));
    }

    #[test]
    fn a_civil_day_starts_where_the_previous_one_ends() {
        assert_eq!(civil_day_start(19_700_101), Millis(0));
        assert_eq!(civil_day_start(20_170_128), Millis(1_485_561_600_000));
        for millis in (-3_000i64..3_000).map(|step| step * 7_919_777_123) {
            let day = Millis(millis).civil_day();
            let start = civil_day_start(day);
            assert!(start.0 <= millis && millis < start.0 + DAY_MS, "{millis} in {day}");
            assert!(Millis(start.0 - 1).civil_day() < day, "{day} starts at {start:?}");
        }
    }
}
