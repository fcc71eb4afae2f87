//! Cron schedules and durations for snapshot slots. Pure: every question takes `now`.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// A parsed `spec.backups.schedule` with its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

/// Why a schedule could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{schedule:?} is not a cron schedule: {reason}")]
    Cron { schedule: String, reason: String },
    #[error("{tz:?} is not an IANA time zone")]
    TimeZone { tz: String },
}

impl ScheduleError {
    /// The spec field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::Cron { .. } => "spec.backups.schedule",
            ScheduleError::TimeZone { .. } => "spec.backups.timeZone",
        }
    }
}

impl Schedule {
    /// Reads a 5-field cron expression, a 6-field one with leading seconds, or a macro such as
    /// `@daily`, in `time_zone` (UTC when none).
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let tz = match time_zone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| ScheduleError::TimeZone {
                tz: name.to_string(),
            })?,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(schedule)
            .map_err(|e| ScheduleError::Cron {
                schedule: schedule.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self { cron, tz })
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The latest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The gap between the slot at or before `t` and the one after it: one period.
    pub fn period_around(&self, t: DateTime<Utc>) -> Option<Duration> {
        let prev = self.latest_at_or_before(t)?;
        let next = self.next_after(prev)?;
        Some(next - prev)
    }
}

/// Parses a Go-style duration made of `s`, `m` and `h` parts, such as `168h` or `1h30m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut number = String::new();
    for ch in s.chars() {
        match ch {
            '0'..='9' | '.' => number.push(ch),
            's' | 'm' | 'h' => {
                let n: f64 = number.parse().ok()?;
                number.clear();
                total += n * match ch {
                    's' => 1.0,
                    'm' => 60.0,
                    _ => 3600.0,
                };
            }
            _ => return None,
        }
    }
    if !number.is_empty() || s.is_empty() {
        return None;
    }
    Duration::try_milliseconds((total * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid time")
    }

    #[test]
    fn daily_schedule_next_and_previous_slot() {
        let s = Schedule::parse("0 2 * * *", None).expect("parses");
        assert_eq!(
            s.next_after(utc(2026, 11, 22, 3, 0, 0)),
            Some(utc(2026, 11, 23, 2, 0, 0))
        );
        assert_eq!(
            s.latest_at_or_before(utc(2026, 11, 22, 2, 0, 0)),
            Some(utc(2026, 11, 22, 2, 0, 0))
        );
        assert_eq!(
            s.period_around(utc(2026, 11, 22, 5, 0, 0)),
            Some(Duration::hours(24))
        );
    }

    #[test]
    fn seconds_field_and_macros_are_accepted() {
        let s = Schedule::parse("*/10 * * * * *", None).expect("parses");
        assert_eq!(
            s.next_after(utc(2026, 1, 1, 0, 0, 3)),
            Some(utc(2026, 1, 1, 0, 0, 10))
        );
        assert!(Schedule::parse("@daily", None).is_ok());
    }

    #[test]
    fn time_zone_shifts_slots() {
        let s = Schedule::parse("0 2 * * *", Some("Europe/Berlin")).expect("parses");
        assert_eq!(
            s.next_after(utc(2026, 11, 22, 0, 0, 0)),
            Some(utc(2026, 11, 22, 1, 0, 0))
        );
    }

    #[test]
    fn bad_schedule_and_zone_name_their_field() {
        let e = Schedule::parse("not a cron", None).expect_err("refused");
        assert_eq!(e.field(), "spec.backups.schedule");
        let e = Schedule::parse("0 2 * * *", Some("Mars/Olympus")).expect_err("refused");
        assert_eq!(e.field(), "spec.backups.timeZone");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("168h"), Some(Duration::hours(168)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::minutes(90)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("5d"), None);
    }
}
