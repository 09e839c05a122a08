//! Report periods and calendar arithmetic (UTC, proleptic Gregorian).
//!
//! A period is a closed range of UTC days. An event belongs to it when the
//! day of its `timestamp` is in the range. Batches are filed under the day
//! they were sealed (`dt=`), which is never before their events' day, so the
//! objects to read are the `dt=` partitions from the first day of the
//! period to the last day plus a grace of `late_days` for batches sealed or
//! uploaded late (an offline laptop, an S3 outage).
//!
//! # Completeness
//! A report read today only holds what has been filed so far. A period is
//! complete once its last `dt=` partition (`to + late_days`) has passed,
//! that is from [`Period::complete_on`] (UTC) on; before that, later
//! batches can still be filed under the days it reads and every number can
//! still grow. The caller passes "today" in ([`Day::of`] the system clock,
//! or an injected day in tests), so the rule is testable without waiting.
//!
//! Days are handled as numbers (days since 1970-01-01) with Howard
//! Hinnant's `days_from_civil` / `civil_from_days`, which is all a report
//! needs and spares a date-time dependency.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC calendar day, as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i64);

/// A period or day that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeriodError {
    /// Not `YYYY-MM-DD`, or no such day.
    #[error("invalid date {0:?}: expected YYYY-MM-DD, e.g. 2026-10-01")]
    Date(String),
    /// Not `YYYYQn`.
    #[error("invalid quarter {0:?}: expected YYYYQ1..YYYYQ4, e.g. 2026Q4")]
    Quarter(String),
    /// `--to` before `--from`.
    #[error("the period ends ({to}) before it starts ({from})")]
    Reversed {
        /// First day.
        from: Day,
        /// Last day.
        to: Day,
    },
}

impl Day {
    /// The day `y-m-d`, if it exists.
    pub fn from_ymd(y: i64, m: u32, d: u32) -> Option<Day> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        // days_from_civil (Hinnant): shift the year to start in March so the
        // leap day is the last day of the year.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m as i64 + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Day(era * 146_097 + doe - 719_468))
    }

    /// (year, month, day).
    pub fn ymd(self) -> (i64, u32, u32) {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
        (y, m, d)
    }

    /// Parse `YYYY-MM-DD` (exactly; also the first ten bytes of an RFC 3339
    /// timestamp).
    pub fn parse(s: &str) -> Result<Day, PeriodError> {
        let err = || PeriodError::Date(s.to_string());
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(err());
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, PeriodError> {
            let part = &s[r];
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        Day::from_ymd(y, m as u32, d as u32).ok_or_else(err)
    }

    /// The Monday starting this day's ISO week (what `date_trunc('week', …)`
    /// gives in Trino and DuckDB).
    pub fn week_start(self) -> Day {
        // 1970-01-01 was a Thursday: day 0 has weekday index 3 (Mon = 0).
        Day(self.0 - (self.0 + 3).rem_euclid(7))
    }

    /// The day `n` days later.
    pub fn plus(self, n: i64) -> Day {
        Day(self.0 + n)
    }

    /// The UTC day of `t` (days before 1970 too).
    pub fn of(t: SystemTime) -> Day {
        const DAY: u64 = 86_400;
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Day((d.as_secs() / DAY) as i64),
            // Before the epoch: a second before midnight of 1970-01-01 is
            // still day -1, so round the distance up.
            Err(e) => Day(-(e.duration().as_secs().div_ceil(DAY) as i64)),
        }
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// The days a report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// Shown in the report, e.g. `2026Q4` or `2026-10-01..2026-11-15`.
    pub label: String,
    /// First day (inclusive).
    pub from: Day,
    /// Last day (inclusive).
    pub to: Day,
}

impl Period {
    /// A calendar quarter: `2026Q4` is 2026-10-01..=2026-12-31.
    pub fn quarter(s: &str) -> Result<Period, PeriodError> {
        let err = || PeriodError::Quarter(s.to_string());
        let up = s.to_ascii_uppercase();
        let (y, q) = up.split_once('Q').ok_or_else(err)?;
        if y.len() != 4 || !y.bytes().all(|c| c.is_ascii_digit()) || q.len() != 1 {
            return Err(err());
        }
        let y: i64 = y.parse().map_err(|_| err())?;
        let q: u32 = q.parse().map_err(|_| err())?;
        if !(1..=4).contains(&q) {
            return Err(err());
        }
        let from = Day::from_ymd(y, 3 * q - 2, 1).ok_or_else(err)?;
        let next = if q == 4 {
            Day::from_ymd(y + 1, 1, 1)
        } else {
            Day::from_ymd(y, 3 * q + 1, 1)
        }
        .ok_or_else(err)?;
        Ok(Period {
            label: format!("{y}Q{q}"),
            from,
            to: next.plus(-1),
        })
    }

    /// `from..=to`, both `YYYY-MM-DD`.
    pub fn range(from: &str, to: &str) -> Result<Period, PeriodError> {
        let (from, to) = (Day::parse(from)?, Day::parse(to)?);
        if to < from {
            return Err(PeriodError::Reversed { from, to });
        }
        Ok(Period {
            label: format!("{from}..{to}"),
            from,
            to,
        })
    }

    /// Whether `day` is in the period.
    pub fn contains(&self, day: Day) -> bool {
        self.from <= day && day <= self.to
    }

    /// The last `dt=` partition a report with `late_days` grace days reads.
    pub fn last_dt(&self, late_days: u16) -> Day {
        self.to.plus(i64::from(late_days))
    }

    /// The first UTC day on which a report with `late_days` grace days is
    /// complete: the day after the last partition it reads.
    pub fn complete_on(&self, late_days: u16) -> Day {
        self.last_dt(late_days).plus(1)
    }

    /// Whether a report run on `today` (UTC) with `late_days` grace days
    /// reads everything that can still be filed for the period.
    pub fn is_complete(&self, late_days: u16, today: Day) -> bool {
        today >= self.complete_on(late_days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_and_match_known_dates() {
        assert_eq!(Day::parse("1970-01-01").unwrap(), Day(0));
        assert_eq!(Day::parse("2000-03-01").unwrap(), Day(11_017));
        // Every ~1000th day from 1970 to the year 9900 (four-digit years).
        for n in (0..2_900_000).step_by(997) {
            let d = Day(n);
            assert_eq!(Day::parse(&d.to_string()).unwrap(), d);
        }
        assert!(Day::parse("2026-02-29").is_err());
        assert!(Day::parse("2024-02-29").is_ok());
        assert!(Day::parse("2026-13-01").is_err());
        assert!(Day::parse("2026-1-01").is_err());
        assert!(Day::parse("+026-01-01").is_err());
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2026-11-27 is a Friday; its week starts Monday 2026-11-23.
        let d = Day::parse("2026-11-27").unwrap();
        assert_eq!(d.week_start().to_string(), "2026-11-23");
        let monday = Day::parse("2026-11-23").unwrap();
        assert_eq!(monday.week_start(), monday);
        // A week that straddles the new year belongs to its Monday.
        assert_eq!(
            Day::parse("2027-01-01").unwrap().week_start().to_string(),
            "2026-12-28"
        );
    }

    #[test]
    fn quarters() {
        let q = Period::quarter("2026Q4").unwrap();
        assert_eq!(
            (q.from.to_string(), q.to.to_string()),
            ("2026-10-01".into(), "2026-12-31".into())
        );
        let q = Period::quarter("2024q1").unwrap();
        assert_eq!(q.to.to_string(), "2024-03-31");
        assert_eq!(q.label, "2024Q1");
        for bad in ["2026Q5", "2026Q0", "26Q1", "2026", "2026Q", "Q4", "2026Q44"] {
            assert!(Period::quarter(bad).is_err(), "{bad}");
        }
        assert!(Period::range("2026-10-02", "2026-10-01").is_err());
    }

    #[test]
    fn a_period_is_complete_the_day_after_its_last_grace_day() {
        let q = Period::quarter("2026Q4").unwrap();
        assert_eq!(q.last_dt(14).to_string(), "2027-01-14");
        assert_eq!(q.complete_on(14).to_string(), "2027-01-15");
        let day = |s| Day::parse(s).unwrap();
        // Batches can still be filed under 2027-01-14 all that day.
        assert!(!q.is_complete(14, day("2027-01-14")));
        assert!(q.is_complete(14, day("2027-01-15")));
        assert!(!q.is_complete(14, day("2026-12-01")), "not ended yet");
        // No grace: complete the day after the period.
        assert!(!q.is_complete(0, day("2026-12-31")));
        assert!(q.is_complete(0, day("2027-01-01")));
    }

    #[test]
    fn the_day_of_a_clock_reading_is_its_utc_day() {
        use std::time::Duration;
        let at = |secs: i64| {
            if secs >= 0 {
                UNIX_EPOCH + Duration::from_secs(secs as u64)
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            }
        };
        assert_eq!(Day::of(at(0)), Day(0));
        assert_eq!(Day::of(at(86_399)), Day(0));
        assert_eq!(Day::of(at(86_400)), Day(1));
        assert_eq!(Day::of(at(-1)), Day(-1));
        assert_eq!(Day::of(at(-86_400)), Day(-1));
        assert_eq!(Day::of(at(-86_401)), Day(-2));
        let d = Day::parse("2026-12-01").unwrap();
        assert_eq!(Day::of(at(d.0 * 86_400 + 14 * 3600)), d);
    }
}
