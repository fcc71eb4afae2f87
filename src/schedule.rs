//! Cron schedules and durations for snapshot slots. Pure: every question takes `now`.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// A parsed `spec.backups.schedule` with its time zone.
///
/// Around daylight-saving changes the slots follow croner (4.0.3 and later): a fixed time of
/// day that does not exist (02:30 on a spring-forward day) runs once, at the first instant
/// after the gap (03:00); a fixed time that happens twice (fall back) runs once, on its first
/// pass; wildcard and step fields (`0 * * * *`, `*/15 1-3 * * *`) take every wall time that
/// exists, so none in the gap and both passes of the repeated hour. Slots are instants, so the
/// snapshot names made from them in UTC never collide.
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
    ///
    /// A step from a single start (`5/15`, meaning `5-59/15`) is accepted, as croner 3 and
    /// Kubernetes CronJobs accept it: croner 4 refuses it unless asked, and a profile that was
    /// valid must not turn invalid on an operator upgrade. The same switch also reads `/15` as
    /// `*/15`, which croner 3 refused.
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let tz = match time_zone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| ScheduleError::TimeZone {
                tz: name.to_string(),
            })?,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .sloppy_ranges(true)
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

/// Whether a cron expression can fire more than once in a minute: it has a seconds field
/// (six fields) that is not a single second. Five fields and macros fire at most once a minute.
/// Read from the text, not from sampled slots, so the answer holds for every minute.
pub fn fires_more_than_once_a_minute(schedule: &str) -> bool {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    match fields.as_slice() {
        [seconds, _, _, _, _, _] => !seconds.chars().all(|c| c.is_ascii_digit()),
        _ => false,
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
    fn only_a_seconds_field_with_more_than_one_second_fires_more_than_once_a_minute() {
        for often in [
            "*/5 * * * * *",
            "* * * * * *",
            "0,30 * * * * *",
            "0-10 2 * * * *",
            "/15 * * * * *",
        ] {
            assert!(fires_more_than_once_a_minute(often), "{often}");
        }
        for ok in [
            "* * * * *",
            "*/5 * * * *",
            "30 0 2 * * *",
            "0 * * * * *",
            "@daily",
            "@hourly",
        ] {
            assert!(!fires_more_than_once_a_minute(ok), "{ok}");
        }
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

    /// An instant written as local wall time with its offset, so each pass of a repeated hour
    /// can be named.
    fn at(local: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(local)
            .expect("RFC 3339")
            .with_timezone(&Utc)
    }

    /// The slots in `(from, to)`, each found from the one before, as the operator walks them.
    fn walk(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::new();
        let mut t = from;
        while let Some(next) = s.next_after(t).filter(|n| *n < to) {
            assert!(next > t, "slot {next} does not move past {t}");
            slots.push(next);
            t = next;
        }
        slots
    }

    // Three local days around each change of the clocks, midnight to midnight.
    const BERLIN_SPRING: (&str, &str, &str) = (
        "Europe/Berlin",
        "2026-03-28T00:00:00+01:00",
        "2026-03-31T00:00:00+02:00",
    );
    const BERLIN_FALL: (&str, &str, &str) = (
        "Europe/Berlin",
        "2026-10-24T00:00:00+02:00",
        "2026-10-27T00:00:00+01:00",
    );
    const NEW_YORK_SPRING: (&str, &str, &str) = (
        "America/New_York",
        "2026-03-07T00:00:00-05:00",
        "2026-03-10T00:00:00-04:00",
    );
    const NEW_YORK_FALL: (&str, &str, &str) = (
        "America/New_York",
        "2026-10-31T00:00:00-04:00",
        "2026-11-03T00:00:00-05:00",
    );
    const TRANSITIONS: [(&str, &str, &str); 4] =
        [BERLIN_SPRING, BERLIN_FALL, NEW_YORK_SPRING, NEW_YORK_FALL];
    const DST_SCHEDULES: [&str; 5] = [
        "30 2 * * *",
        "30 1 * * *",
        "0 2 * * *",
        "0 * * * *",
        "*/15 1-3 * * *",
    ];

    fn walk_in(schedule: &str, (tz, from, to): (&str, &str, &str)) -> Vec<DateTime<Utc>> {
        let s = Schedule::parse(schedule, Some(tz)).expect("parses");
        walk(&s, at(from), at(to))
    }

    #[test]
    fn fixed_time_in_the_spring_gap_runs_once_at_the_first_instant_after_it() {
        // 02:30 does not exist on the day the clocks jump from 02:00 to 03:00.
        assert_eq!(
            walk_in("30 2 * * *", BERLIN_SPRING),
            vec![
                at("2026-03-28T02:30:00+01:00"),
                at("2026-03-29T03:00:00+02:00"),
                at("2026-03-30T02:30:00+02:00"),
            ]
        );
        assert_eq!(
            walk_in("30 2 * * *", NEW_YORK_SPRING),
            vec![
                at("2026-03-07T02:30:00-05:00"),
                at("2026-03-08T03:00:00-04:00"),
                at("2026-03-09T02:30:00-04:00"),
            ]
        );
    }

    #[test]
    fn fixed_time_before_the_spring_gap_is_not_run_again_after_it() {
        // croner 3 also ran these at 03:00 on the day of the change (croner-rust issue 67).
        assert_eq!(
            walk_in("30 1 * * *", BERLIN_SPRING),
            vec![
                at("2026-03-28T01:30:00+01:00"),
                at("2026-03-29T01:30:00+01:00"),
                at("2026-03-30T01:30:00+02:00"),
            ]
        );
        assert_eq!(
            walk_in("30 1 * * *", NEW_YORK_SPRING),
            vec![
                at("2026-03-07T01:30:00-05:00"),
                at("2026-03-08T01:30:00-05:00"),
                at("2026-03-09T01:30:00-04:00"),
            ]
        );
    }

    #[test]
    fn fixed_time_in_the_repeated_hour_runs_once_on_its_first_pass() {
        assert_eq!(
            walk_in("30 2 * * *", BERLIN_FALL),
            vec![
                at("2026-10-24T02:30:00+02:00"),
                at("2026-10-25T02:30:00+02:00"),
                at("2026-10-26T02:30:00+01:00"),
            ]
        );
        assert_eq!(
            walk_in("30 1 * * *", NEW_YORK_FALL),
            vec![
                at("2026-10-31T01:30:00-04:00"),
                at("2026-11-01T01:30:00-04:00"),
                at("2026-11-02T01:30:00-05:00"),
            ]
        );
    }

    #[test]
    fn hourly_schedule_keeps_one_slot_per_real_hour_across_transitions() {
        for window in TRANSITIONS {
            let slots = walk_in("0 * * * *", window);
            // 71 real hours in a spring window, 73 in a fall one; both ends excluded.
            let hours = (at(window.2) - at(window.1)).num_hours();
            assert_eq!(slots.len() as i64, hours - 1, "{window:?}");
            assert!(
                slots.windows(2).all(|w| w[1] - w[0] == Duration::hours(1)),
                "{window:?}: {slots:?}"
            );
        }
    }

    #[test]
    fn step_schedule_takes_no_wall_time_from_the_spring_gap() {
        let berlin = walk_in("*/15 1-3 * * *", BERLIN_SPRING);
        let on = |day: &str| -> Vec<DateTime<Utc>> {
            berlin
                .iter()
                .copied()
                .filter(|t| local_date(*t, "Europe/Berlin") == day)
                .collect()
        };
        assert_eq!(on("2026-03-28").len(), 12);
        assert_eq!(
            on("2026-03-29"),
            [
                "2026-03-29T01:00:00+01:00",
                "2026-03-29T01:15:00+01:00",
                "2026-03-29T01:30:00+01:00",
                "2026-03-29T01:45:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T03:15:00+02:00",
                "2026-03-29T03:30:00+02:00",
                "2026-03-29T03:45:00+02:00",
            ]
            .map(at)
        );
        assert_eq!(on("2026-03-30").len(), 12);
        let new_york = walk_in("*/15 1-3 * * *", NEW_YORK_SPRING);
        assert_eq!(new_york.len(), 12 + 8 + 12);
        let gap_day: Vec<DateTime<Utc>> = new_york[12..20].to_vec();
        assert_eq!(gap_day[3], at("2026-03-08T01:45:00-05:00"));
        assert_eq!(gap_day[4], at("2026-03-08T03:00:00-04:00"));
    }

    #[test]
    fn step_schedule_runs_both_passes_of_the_repeated_hour() {
        let berlin = walk_in("*/15 1-3 * * *", BERLIN_FALL);
        assert_eq!(berlin.len(), 12 + 16 + 12);
        for pass in ["+02:00", "+01:00"] {
            for minute in ["00", "15", "30", "45"] {
                let t = at(&format!("2026-10-25T02:{minute}:00{pass}"));
                assert_eq!(berlin.iter().filter(|s| **s == t).count(), 1, "{t}");
            }
        }
        let new_york = walk_in("*/15 1-3 * * *", NEW_YORK_FALL);
        assert_eq!(new_york.len(), 12 + 16 + 12);
        for pass in ["-04:00", "-05:00"] {
            for minute in ["00", "15", "30", "45"] {
                let t = at(&format!("2026-11-01T01:{minute}:00{pass}"));
                assert_eq!(new_york.iter().filter(|s| **s == t).count(), 1, "{t}");
            }
        }
    }

    #[test]
    fn latest_slot_at_any_instant_is_one_the_forward_walk_found() {
        // The reconcile takes the latest slot at or before now; were it ever a time the walk
        // skips (croner 3 gave 01:59:59 inside a spring gap), one slot would get two snapshots.
        for window in TRANSITIONS {
            for schedule in DST_SCHEDULES {
                let s = Schedule::parse(schedule, Some(window.0)).expect("parses");
                let (from, to) = (at(window.1), at(window.2));
                let slots = walk(&s, from, to);
                let every_five_minutes =
                    std::iter::successors(Some(slots[0]), |t| Some(*t + Duration::minutes(5)))
                        .take_while(|t| *t < to);
                let each_side_of_each_slot = slots
                    .iter()
                    .flat_map(|t| [-1, 0, 1].map(|d| *t + Duration::seconds(d)));
                for now in every_five_minutes
                    .chain(each_side_of_each_slot)
                    .filter(|t| *t >= slots[0])
                {
                    let expected = slots.iter().rev().find(|t| **t <= now).copied();
                    assert_eq!(
                        s.latest_at_or_before(now),
                        expected,
                        "{schedule} in {} at {now}",
                        window.0
                    );
                }
            }
        }
    }

    #[test]
    fn step_from_a_single_start_is_accepted_as_before() {
        let s = Schedule::parse("5/15 * * * *", None).expect("parses");
        assert_eq!(
            walk(&s, utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 1, 0, 0)),
            vec![
                utc(2026, 1, 1, 0, 5, 0),
                utc(2026, 1, 1, 0, 20, 0),
                utc(2026, 1, 1, 0, 35, 0),
                utc(2026, 1, 1, 0, 50, 0),
            ]
        );
    }

    fn local_date(t: DateTime<Utc>, tz: &str) -> String {
        let tz: Tz = tz.parse().expect("zone");
        t.with_timezone(&tz).format("%Y-%m-%d").to_string()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("168h"), Some(Duration::hours(168)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::minutes(90)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("5d"), None);
    }
}
