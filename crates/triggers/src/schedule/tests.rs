use chrono::{TimeZone, Utc};

use super::*;

/// Unix ms of a UTC date-time: every expected instant below is written out in UTC.
fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .unwrap()
        .timestamp_millis()
}

fn sched(expression: &str, time_zone: &str) -> Schedule {
    Schedule::parse(expression, time_zone).unwrap()
}

const SEC: i64 = 1_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// All ticks in `[from, to)` by chaining `next_after`, checking the chain is strictly
/// increasing as it goes.
fn ticks(s: &Schedule, from: i64, to: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut at = s.next_after(from - 1);
    while let Some(t) = at.filter(|&t| t < to) {
        if let Some(&last) = out.last() {
            assert!(
                t > last,
                "{} in {}: {t} after {last}",
                s.expression(),
                s.time_zone()
            );
        }
        out.push(t);
        at = s.next_after(t);
    }
    out
}

// ---------------------------------------------------------------- parsing

#[test]
fn parses_five_fields_and_keeps_what_was_given() {
    let s = sched("*/15 9-17 * * MON-FRI", "Europe/Berlin");
    assert_eq!(s.expression(), "*/15 9-17 * * MON-FRI");
    assert_eq!(s.time_zone(), "Europe/Berlin");
    assert_eq!(sched("0 0 * * *", "UTC").time_zone(), "UTC");
}

#[test]
fn five_fields_fire_on_second_zero_and_six_fields_lead_with_seconds() {
    let from = utc(2027, 1, 4, 12, 0, 0);
    assert_eq!(
        sched("* * * * *", "UTC").upcoming(from, 2),
        [utc(2027, 1, 4, 12, 1, 0), utc(2027, 1, 4, 12, 2, 0)]
    );
    assert_eq!(
        sched("*/20 * * * * *", "UTC").upcoming(from, 4),
        [
            utc(2027, 1, 4, 12, 0, 20),
            utc(2027, 1, 4, 12, 0, 40),
            utc(2027, 1, 4, 12, 1, 0),
            utc(2027, 1, 4, 12, 1, 20)
        ]
    );
    // Six fields: "30 5 * * * *" is second 30 of minute 5 of every hour, not 05:30.
    assert_eq!(
        sched("30 5 * * * *", "UTC").next_after(from),
        Some(utc(2027, 1, 4, 12, 5, 30))
    );
}

#[test]
fn ranges_steps_lists_and_names() {
    // 2027-01-04 is a Monday.
    let from = utc(2027, 1, 4, 0, 0, 0);
    assert_eq!(
        sched("0,30 8-9 * * *", "UTC").upcoming(from, 5),
        [
            utc(2027, 1, 4, 8, 0, 0),
            utc(2027, 1, 4, 8, 30, 0),
            utc(2027, 1, 4, 9, 0, 0),
            utc(2027, 1, 4, 9, 30, 0),
            utc(2027, 1, 5, 8, 0, 0)
        ]
    );
    assert_eq!(
        sched("0 10-20/5 * * *", "UTC").upcoming(from, 4),
        [
            utc(2027, 1, 4, 10, 0, 0),
            utc(2027, 1, 4, 15, 0, 0),
            utc(2027, 1, 4, 20, 0, 0),
            utc(2027, 1, 5, 10, 0, 0)
        ]
    );
    assert_eq!(
        sched("0 12 * * SAT,sun", "UTC").upcoming(from, 3),
        [
            utc(2027, 1, 9, 12, 0, 0),
            utc(2027, 1, 10, 12, 0, 0),
            utc(2027, 1, 16, 12, 0, 0)
        ]
    );
    assert_eq!(
        sched("0 0 1 JAN-MAR/2 *", "UTC").upcoming(from, 2),
        [utc(2027, 3, 1, 0, 0, 0), utc(2028, 1, 1, 0, 0, 0)]
    );
    // Leap day: rare but not never.
    assert_eq!(
        sched("0 0 29 2 *", "UTC").next_after(from),
        Some(utc(2028, 2, 29, 0, 0, 0))
    );
}

#[test]
fn refuses_other_field_counts_and_nicknames() {
    for (expression, found) in [
        ("* * * *", 4),
        ("0 * * * * * 2030", 7),
        ("", 0),
        ("   ", 0),
        ("@hourly", 1),
        ("@daily", 1),
        ("1 2 3 4 5 6 7 8", 8),
    ] {
        assert_eq!(
            Schedule::parse(expression, "UTC").unwrap_err(),
            ScheduleError::FieldCount { found },
            "{expression:?}"
        );
    }
}

#[test]
fn refuses_garbage_with_crons_message() {
    for expression in [
        "a b c d e",
        "61 * * * *",
        "* 24 * * *",
        "* * 32 * *",
        "* * * 13 *",
        "*/x * * * *",
        "1-2-3 * * * *",
    ] {
        assert!(
            matches!(
                Schedule::parse(expression, "UTC"),
                Err(ScheduleError::Expression(_))
            ),
            "{expression:?}"
        );
    }
    assert_eq!(
        Schedule::parse("61 * * * *", "UTC").unwrap_err(),
        ScheduleError::Expression("Component error: Number out of bounds.".into())
    );
    assert_eq!(
        Schedule::parse("* * * * BAD", "UTC")
            .unwrap_err()
            .to_string(),
        "invalid cron expression: Pattern contains illegal characters: \
         CronPattern contains illegal character 'B' in part 'BAD'"
    );
}

#[test]
fn error_messages_are_printable_ascii() {
    let Err(ScheduleError::Expression(message)) = Schedule::parse("é\u{7}\u{202e} * * * *", "UTC")
    else {
        panic!("expected an expression error");
    };
    assert!(message.contains('?'), "{message}");
    assert!(
        message.chars().all(|c| c.is_ascii_graphic() || c == ' '),
        "{message:?}"
    );

    let Err(ScheduleError::UnknownTimeZone(zone)) = Schedule::parse("* * * * *", "Evil/\u{1b}[31m")
    else {
        panic!("expected a time zone error");
    };
    assert_eq!(zone, "Evil/?[31m");
}

#[test]
fn refuses_unknown_time_zones() {
    for zone in [
        "Mars/Olympus_Mons",
        "",
        "europe/berlin",
        "UTC+2",
        "Europe/Berlin ",
    ] {
        assert_eq!(
            Schedule::parse("0 * * * *", zone).unwrap_err(),
            ScheduleError::UnknownTimeZone(zone.into()),
            "{zone:?}"
        );
    }
    sched("0 * * * *", "America/New_York");
    sched("0 * * * *", "Etc/UTC");
}

#[test]
fn refuses_expressions_over_200_bytes() {
    // "0,0,0,...,0 * * * *", padded with spaces to exactly the limit.
    let minutes = vec!["0"; 95].join(",");
    let at_limit = format!(
        "{minutes} * * * *{}",
        " ".repeat(MAX_EXPRESSION_LEN - minutes.len() - 8)
    );
    assert_eq!(at_limit.len(), MAX_EXPRESSION_LEN);
    sched(&at_limit, "UTC");
    let over = format!("{at_limit} ");
    assert_eq!(over.len(), MAX_EXPRESSION_LEN + 1);
    assert_eq!(
        Schedule::parse(&over, "UTC").unwrap_err(),
        ScheduleError::TooLong
    );
    // Checked before anything else, so a huge input costs nothing.
    assert_eq!(
        Schedule::parse(&"* ".repeat(100_000), "Nowhere").unwrap_err(),
        ScheduleError::TooLong
    );
}

#[test]
fn refuses_expressions_that_never_fire() {
    for expression in [
        "0 0 30 2 *",
        "0 0 31 4 *",
        "0 0 31 2,4,6,9,11 *",
        "0 0 0 31 11 *",
    ] {
        assert_eq!(
            Schedule::parse(expression, "UTC").unwrap_err(),
            ScheduleError::Never,
            "{expression}"
        );
    }
    // Day-of-month OR day-of-week (classic cron): the Mondays make this one fire.
    sched("0 0 30 2 MON", "UTC");
}

// ---------------------------------------------------------------- next_after, upcoming

#[test]
fn next_after_is_strict() {
    let s = sched("30 9 * * *", "UTC");
    let at = utc(2027, 6, 1, 9, 30, 0);
    assert_eq!(s.next_after(at - 1), Some(at));
    assert_eq!(s.next_after(at), Some(at + DAY));
    assert_eq!(s.next_after(at + 1), Some(at + DAY));
    assert_eq!(s.next_after(utc(2027, 6, 1, 0, 0, 0)), Some(at));
}

#[test]
fn next_after_handles_sub_second_and_pre_1970_times() {
    let s = sched("* * * * * *", "UTC");
    let noon = utc(2027, 6, 1, 12, 0, 0);
    assert_eq!(s.next_after(noon + 500), Some(noon + SEC));
    assert_eq!(s.next_after(noon), Some(noon + SEC));
    assert_eq!(s.next_after(noon - 1), Some(noon));
    assert_eq!(s.next_after(noon + 999), Some(noon + SEC));
    // Floor, not truncation toward zero: -1.5 s is after -2 s, before -1 s.
    assert_eq!(s.next_after(-1_500), Some(-1_000));
    assert_eq!(s.next_after(-1), Some(0));
}

#[test]
fn next_after_in_a_zone() {
    let s = sched("0 9 * * *", "Europe/Berlin");
    // Winter, CET (UTC+1).
    assert_eq!(
        s.next_after(utc(2027, 1, 15, 0, 0, 0)),
        Some(utc(2027, 1, 15, 8, 0, 0))
    );
    // Summer, CEST (UTC+2).
    assert_eq!(
        s.next_after(utc(2027, 7, 15, 0, 0, 0)),
        Some(utc(2027, 7, 15, 7, 0, 0))
    );
    // 09:00 in Berlin already passed at 08:30 UTC in summer.
    assert_eq!(
        s.next_after(utc(2027, 7, 15, 8, 30, 0)),
        Some(utc(2027, 7, 16, 7, 0, 0))
    );

    let tokyo = sched("0 0 * * *", "Asia/Tokyo"); // UTC+9, no DST
    assert_eq!(
        tokyo.next_after(utc(2027, 1, 1, 0, 0, 0)),
        Some(utc(2027, 1, 1, 15, 0, 0))
    );
}

#[test]
fn upcoming_lists_ascending() {
    let s = sched("*/15 * * * *", "UTC");
    assert_eq!(
        s.upcoming(utc(2027, 6, 1, 10, 7, 0), 5),
        [
            utc(2027, 6, 1, 10, 15, 0),
            utc(2027, 6, 1, 10, 30, 0),
            utc(2027, 6, 1, 10, 45, 0),
            utc(2027, 6, 1, 11, 0, 0),
            utc(2027, 6, 1, 11, 15, 0)
        ]
    );
    assert!(s.upcoming(0, 0).is_empty());
    assert_eq!(
        s.upcoming(utc(2027, 6, 1, 10, 15, 0), 1),
        [utc(2027, 6, 1, 10, 30, 0)]
    );
}

#[test]
fn none_past_crons_search_limit() {
    let s = sched("0 0 1 1 *", "UTC");
    assert_eq!(
        s.next_after(utc(4998, 6, 1, 0, 0, 0)),
        Some(utc(4999, 1, 1, 0, 0, 0))
    );
    assert_eq!(s.next_after(utc(5000, 6, 1, 0, 0, 0)), None);
    assert_eq!(s.next_after(i64::MAX), None);
    assert!(s.upcoming(utc(5000, 6, 1, 0, 0, 0), 3).is_empty());
}

// ---------------------------------------------------------------- daylight saving
//
// America/New_York 2027: spring forward Sun Mar 14, 02:00 EST -> 03:00 EDT (07:00Z);
// fall back Sun Nov 7, 02:00 EDT -> 01:00 EST (06:00Z).
// Europe/Berlin 2027: spring forward Sun Mar 28, 02:00 CET -> 03:00 CEST (01:00Z);
// fall back Sun Oct 31, 03:00 CEST -> 02:00 CET (01:00Z).

#[test]
fn fixed_time_in_the_spring_gap_fires_at_the_end_of_the_gap() {
    let s = sched("30 2 * * *", "America/New_York");
    assert_eq!(
        s.upcoming(utc(2027, 3, 13, 0, 0, 0), 4),
        [
            utc(2027, 3, 13, 7, 30, 0), // Sat 02:30 EST
            utc(2027, 3, 14, 7, 0, 0),  // Sun 02:30 does not exist: 03:00 EDT
            utc(2027, 3, 15, 6, 30, 0), // Mon 02:30 EDT
            utc(2027, 3, 16, 6, 30, 0),
        ]
    );
    let berlin = sched("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        berlin.upcoming(utc(2027, 3, 27, 0, 0, 0), 3),
        [
            utc(2027, 3, 27, 1, 30, 0), // Sat 02:30 CET
            utc(2027, 3, 28, 1, 0, 0),  // Sun: 03:00 CEST
            utc(2027, 3, 29, 0, 30, 0), // Mon 02:30 CEST
        ]
    );
    // From just before and exactly at the end of the gap.
    assert_eq!(
        s.next_after(utc(2027, 3, 14, 7, 0, 0) - 1),
        Some(utc(2027, 3, 14, 7, 0, 0))
    );
    assert_eq!(
        s.next_after(utc(2027, 3, 14, 7, 0, 0)),
        Some(utc(2027, 3, 15, 6, 30, 0))
    );
}

#[test]
fn fixed_time_in_the_fall_back_overlap_fires_once_in_the_first_pass() {
    let s = sched("30 1 * * *", "America/New_York");
    assert_eq!(
        s.upcoming(utc(2027, 11, 6, 0, 0, 0), 3),
        [
            utc(2027, 11, 6, 5, 30, 0), // Sat 01:30 EDT
            utc(2027, 11, 7, 5, 30, 0), // Sun 01:30 EDT, once (not 06:30Z, 01:30 EST)
            utc(2027, 11, 8, 6, 30, 0), // Mon 01:30 EST
        ]
    );
    // From inside the second pass, before and after its 01:30 EST: not back to 05:30Z,
    // which croner's own search returns.
    assert_eq!(
        s.next_after(utc(2027, 11, 7, 6, 20, 0)),
        Some(utc(2027, 11, 8, 6, 30, 0))
    );
    assert_eq!(
        s.next_after(utc(2027, 11, 7, 6, 40, 0)),
        Some(utc(2027, 11, 8, 6, 30, 0))
    );
    let berlin = sched("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        berlin.upcoming(utc(2027, 10, 30, 12, 0, 0), 2),
        [utc(2027, 10, 31, 0, 30, 0), utc(2027, 11, 1, 1, 30, 0)]
    );
}

#[test]
fn hourly_fires_every_real_hour_across_both_transitions() {
    let s = sched("0 * * * *", "America/New_York");
    assert_eq!(
        s.upcoming(utc(2027, 11, 7, 3, 30, 0), 5),
        [
            utc(2027, 11, 7, 4, 0, 0), // 00:00 EDT
            utc(2027, 11, 7, 5, 0, 0), // 01:00 EDT
            utc(2027, 11, 7, 6, 0, 0), // 01:00 EST: the hour again
            utc(2027, 11, 7, 7, 0, 0), // 02:00 EST
            utc(2027, 11, 7, 8, 0, 0),
        ]
    );
    assert_eq!(
        s.upcoming(utc(2027, 3, 14, 4, 30, 0), 4),
        [
            utc(2027, 3, 14, 5, 0, 0), // 00:00 EST
            utc(2027, 3, 14, 6, 0, 0), // 01:00 EST
            utc(2027, 3, 14, 7, 0, 0), // 03:00 EDT (02:00 does not exist)
            utc(2027, 3, 14, 8, 0, 0),
        ]
    );
    let berlin = sched("0 * * * *", "Europe/Berlin");
    assert_eq!(
        berlin.upcoming(utc(2027, 10, 30, 23, 30, 0), 4),
        [
            utc(2027, 10, 31, 0, 0, 0), // 02:00 CEST
            utc(2027, 10, 31, 1, 0, 0), // 02:00 CET
            utc(2027, 10, 31, 2, 0, 0), // 03:00 CET
            utc(2027, 10, 31, 3, 0, 0),
        ]
    );
    // 24 ticks on an ordinary day, 25 on the day that falls back, 23 on the day that springs.
    let day = |y, m, d| {
        let zone: Tz = "America/New_York".parse().unwrap();
        let midnight = |d: u32| {
            zone.with_ymd_and_hms(y, m, d, 0, 0, 0)
                .unwrap()
                .timestamp_millis()
        };
        ticks(&s, midnight(d), midnight(d + 1)).len()
    };
    assert_eq!(
        (day(2027, 11, 6), day(2027, 11, 7), day(2027, 3, 14)),
        (24, 25, 23)
    );
}

#[test]
fn every_15_minutes_has_no_duplicate_and_no_gap_across_both_transitions() {
    for zone in ["America/New_York", "Europe/Berlin"] {
        let s = sched("*/15 * * * *", zone);
        for (from, to) in [
            (utc(2027, 3, 13, 0, 0, 0), utc(2027, 3, 30, 0, 0, 0)),
            (utc(2027, 10, 30, 0, 0, 0), utc(2027, 11, 9, 0, 0, 0)),
        ] {
            let all = ticks(&s, from, to);
            assert_eq!(all.len() as i64, (to - from) / (15 * MIN), "{zone}");
            assert!(all.windows(2).all(|w| w[1] - w[0] == 15 * MIN), "{zone}");
        }
    }
    let s = sched("*/15 * * * *", "America/New_York");
    assert_eq!(
        s.upcoming(utc(2027, 11, 7, 5, 40, 0), 4),
        [
            utc(2027, 11, 7, 5, 45, 0), // 01:45 EDT
            utc(2027, 11, 7, 6, 0, 0),  // 01:00 EST
            utc(2027, 11, 7, 6, 15, 0), // 01:15 EST
            utc(2027, 11, 7, 6, 30, 0),
        ]
    );
    // Started inside the second pass: croner alone would answer 05:30Z (01:30 EDT).
    assert_eq!(
        s.next_after(utc(2027, 11, 7, 6, 20, 0)),
        Some(utc(2027, 11, 7, 6, 30, 0))
    );
    assert_eq!(
        s.upcoming(utc(2027, 3, 14, 6, 40, 0), 3),
        [
            utc(2027, 3, 14, 6, 45, 0), // 01:45 EST
            utc(2027, 3, 14, 7, 0, 0),  // 03:00 EDT
            utc(2027, 3, 14, 7, 15, 0),
        ]
    );
}

#[test]
fn every_second_across_both_transitions() {
    let s = sched("* * * * * *", "America/New_York");
    let fall = utc(2027, 11, 7, 6, 0, 0);
    assert_eq!(
        ticks(&s, fall - 5 * SEC, fall + 5 * SEC),
        (-5..5).map(|i| fall + i * SEC).collect::<Vec<_>>()
    );
    let spring = utc(2027, 3, 14, 7, 0, 0);
    assert_eq!(
        ticks(&s, spring - 5 * SEC, spring + 5 * SEC),
        (-5..5).map(|i| spring + i * SEC).collect::<Vec<_>>()
    );
    // Every second of the repeated hour fires twice in wall-clock terms, once per instant.
    assert_eq!(ticks(&s, fall - HOUR, fall + HOUR).len(), 7_200);
}

#[test]
fn an_interval_job_only_in_the_overlap_fires_in_both_passes() {
    // Minutes 10 and 50 of hour 1 on the fall-back day; the fixed-time twin fires once.
    let s = sched("10,50 1 * * *", "America/New_York");
    assert_eq!(
        s.upcoming(utc(2027, 11, 7, 4, 0, 0), 5),
        [
            utc(2027, 11, 7, 5, 10, 0), // 01:10 EDT
            utc(2027, 11, 7, 5, 50, 0), // 01:50 EDT
            utc(2027, 11, 7, 6, 10, 0), // 01:10 EST
            utc(2027, 11, 7, 6, 50, 0), // 01:50 EST
            utc(2027, 11, 8, 6, 10, 0),
        ]
    );
    // From between the passes (after 01:50 EDT) straight to 01:10 EST.
    assert_eq!(
        s.next_after(utc(2027, 11, 7, 5, 55, 0)),
        Some(utc(2027, 11, 7, 6, 10, 0))
    );
    // An interval job whose times fall in the spring gap just has no tick that day.
    let gap = sched("10,50 2 * * *", "America/New_York");
    assert_eq!(
        gap.upcoming(utc(2027, 3, 13, 12, 0, 0), 2),
        [utc(2027, 3, 15, 6, 10, 0), utc(2027, 3, 15, 6, 50, 0)]
    );
}

/// Brute force: an interval job fires at exactly the instants whose wall clock matches.
/// Checked minute by minute (5-field expressions fire on second 0) over both transitions.
#[test]
fn interval_jobs_match_a_brute_force_oracle() {
    let cases = [
        ("*/15 * * * *", "America/New_York"),
        ("0 * * * *", "Europe/Berlin"),
        ("7,41 0-3 * * *", "America/New_York"),
        ("*/20 1,2 * * *", "Europe/Berlin"),
        ("30 1 * * 0", "America/New_York"), // fixed time, but never in a gap or overlap
    ];
    let windows = [
        (utc(2027, 3, 13, 0, 0, 0), utc(2027, 3, 15, 0, 0, 0)),
        (utc(2027, 3, 27, 0, 0, 0), utc(2027, 3, 29, 0, 0, 0)),
        (utc(2027, 10, 30, 0, 0, 0), utc(2027, 11, 1, 0, 0, 0)),
        (utc(2027, 11, 6, 0, 0, 0), utc(2027, 11, 8, 0, 0, 0)),
    ];
    for (expression, zone) in cases {
        let s = sched(expression, zone);
        let cron = Cron::from_str(expression).unwrap();
        let tz: Tz = zone.parse().unwrap();
        for (from, to) in windows {
            let expected: Vec<i64> = (from / MIN..to / MIN)
                .map(|m| m * MIN)
                .filter(|&t| {
                    cron.is_time_matching(&tz.timestamp_millis_opt(t).unwrap())
                        .unwrap()
                })
                .filter(|&t| {
                    // "30 1 * * 0" is fixed-time: first pass only.
                    !s.fixed_time
                        || tz
                            .from_local_datetime(&tz.timestamp_millis_opt(t).unwrap().naive_local())
                            .earliest()
                            == tz.timestamp_millis_opt(t).single()
                })
                .collect();
            assert_eq!(ticks(&s, from, to), expected, "{expression} in {zone}");
        }
    }
}

/// The backwards search used by `due` is the forward one reversed, DST included.
#[test]
fn last_at_or_before_mirrors_next_after() {
    let cases = [
        ("* * * * * *", "America/New_York", 2 * HOUR),
        ("*/15 * * * *", "America/New_York", DAY),
        ("0 * * * *", "Europe/Berlin", DAY),
        ("30 2 * * *", "America/New_York", 4 * DAY),
        ("30 1 * * *", "America/New_York", 4 * DAY),
        ("30 2 * * *", "Europe/Berlin", 4 * DAY),
        ("10,50 1 * * *", "America/New_York", 3 * DAY),
        ("10,50 2 * * *", "America/New_York", 3 * DAY),
        ("0 0 29 2 *", "UTC", 3 * 366 * DAY),
    ];
    let centres = [
        utc(2027, 3, 14, 7, 0, 0),
        utc(2027, 3, 28, 1, 0, 0),
        utc(2027, 11, 7, 6, 0, 0),
        utc(2027, 10, 31, 1, 0, 0),
        utc(2028, 2, 29, 0, 0, 0),
    ];
    for (expression, zone, span) in cases {
        let s = sched(expression, zone);
        for centre in centres {
            let (from, to) = (centre - span, centre + span);
            let forward = ticks(&s, from, to);
            let mut backward = Vec::new();
            let mut at = s.last_at_or_before((to - 1).div_euclid(1000));
            while let Some(t) = at.map(|secs| secs * 1000).filter(|&t| t >= from) {
                backward.push(t);
                at = s.last_at_or_before(t / 1000 - 1);
            }
            backward.reverse();
            assert_eq!(backward, forward, "{expression} in {zone} around {centre}");
            // And from points all over the repeated/skipped hours, one step each way agrees.
            for probe in (centre - HOUR - 2 * SEC..centre + HOUR + 2 * SEC).step_by(4_999) {
                let next = s.next_after(probe);
                let prev = s
                    .last_at_or_before(probe.div_euclid(1000))
                    .map(|t| t * 1000);
                if let (Some(prev), Some(next)) = (prev, next) {
                    assert!(prev <= probe && probe < next, "{expression} {zone} {probe}");
                    assert_eq!(
                        s.next_after(prev),
                        Some(next),
                        "{expression} {zone} {probe}"
                    );
                }
            }
        }
    }
}

/// `due`'s walk (with its shortcut) yields exactly the `last_at_or_before` chain.
#[test]
fn the_fast_walk_down_equals_the_plain_one() {
    let cases = [
        ("* * * * * *", "America/New_York", 3 * HOUR),
        ("*/20 */7 * * * *", "Europe/Berlin", DAY),
        ("0,30 * * * *", "America/New_York", 2 * DAY),
        ("30 2 * * *", "America/New_York", 4 * DAY),
        ("30 1 * * *", "America/New_York", 4 * DAY),
        ("10,50 1,2 * * *", "America/New_York", 4 * DAY),
        ("15 3 * * *", "Europe/Berlin", 4 * DAY),
        ("0 0 29 2 *", "UTC", 5 * 366 * DAY),
    ];
    let centres = [
        utc(2027, 3, 14, 7, 0, 0),
        utc(2027, 3, 28, 1, 0, 0),
        utc(2027, 11, 7, 6, 0, 0),
        utc(2027, 10, 31, 1, 0, 0),
    ];
    for (expression, zone, span) in cases {
        let s = sched(expression, zone);
        for centre in centres {
            let (from, to) = ((centre - span) / 1000, (centre + span) / 1000);
            let fast: Vec<i64> = s.ticks_down_from(to).take_while(|&t| t >= from).collect();
            let plain: Vec<i64> =
                std::iter::successors(s.last_at_or_before(to), |&t| s.last_at_or_before(t - 1))
                    .take_while(|&t| t >= from)
                    .collect();
            assert!(!plain.is_empty());
            assert_eq!(fast, plain, "{expression} in {zone} around {centre}");
        }
    }
}

/// Chaining never repeats an instant, from any starting point, in zones with and without
/// daylight saving (including a half-hour shift and the southern hemisphere).
#[test]
fn chained_ticks_strictly_increase_everywhere() {
    let zones = [
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "America/Santiago",
        "Asia/Kolkata",
        "UTC",
    ];
    let expressions = [
        "*/20 * * * *",
        "0 * * * *",
        "30 1 * * *",
        "30 2 * * *",
        "0 0 * * *",
        "*/30 * 0-3 * * *",
    ];
    for zone in zones {
        for expression in expressions {
            let s = sched(expression, zone);
            let all = ticks(&s, utc(2027, 1, 1, 0, 0, 0), utc(2028, 1, 1, 0, 0, 0));
            assert!(all.len() >= 365, "{expression} in {zone}: {}", all.len());
            assert!(all.iter().all(|t| t % SEC == 0));
        }
    }
}

// ---------------------------------------------------------------- due

#[test]
fn on_time_ticks_all_fire() {
    // Every second; next tick 2 s before now; grace 60 s: ticks now-2, now-1 and now itself
    // ([next_ms, now_ms] is inclusive at both ends), all on time.
    let s = sched("* * * * * *", "UTC");
    let now = utc(2027, 6, 1, 12, 0, 10);
    let due = due(&s, now - 2 * SEC, now, MissedTicks::Skip, 0, 60 * SEC);
    assert_eq!(
        due,
        Due {
            fire: vec![now - 2 * SEC, now - SEC, now],
            missed: 0,
            missed_truncated: false,
            next: Some(now + SEC)
        }
    );
    // Half a second later (next_ms is then not a tick): ticks in [now-1.5 s, now+0.5 s].
    let due2 = super::due(&s, now - 1_500, now + 500, MissedTicks::Skip, 0, 60 * SEC);
    assert_eq!(due2.fire, [now - SEC, now]);
    assert_eq!(due2.next, Some(now + SEC));
}

#[test]
fn grace_boundary() {
    let s = sched("* * * * *", "UTC");
    let tick = utc(2027, 6, 1, 12, 0, 0);
    // Exactly grace old: on time. One ms older: late (and Skip drops it).
    assert_eq!(
        due(&s, tick, tick + 30 * SEC, MissedTicks::Skip, 0, 30 * SEC).fire,
        [tick]
    );
    let late = due(
        &s,
        tick,
        tick + 30 * SEC + 1,
        MissedTicks::Skip,
        0,
        30 * SEC,
    );
    assert_eq!((late.fire, late.missed), (vec![], 1));
    // Grace 0: only a tick at now itself; negative grace counts as 0.
    assert_eq!(due(&s, tick, tick, MissedTicks::Skip, 0, 0).fire, [tick]);
    assert_eq!(due(&s, tick, tick, MissedTicks::Skip, 0, -5).fire, [tick]);
    assert_eq!(due(&s, tick, tick + 1, MissedTicks::Skip, 0, 0).missed, 1);
}

/// Per-minute schedule, down from 12:00 to 12:10:30, grace 60 s: 11 ticks due (12:00 to
/// 12:10); 12:10 is on time, 12:00..=12:09 (10 ticks) are late.
#[test]
fn ten_minute_downtime_with_an_on_time_tick() {
    let s = sched("* * * * *", "UTC");
    let (next, now) = (utc(2027, 6, 1, 12, 0, 0), utc(2027, 6, 1, 12, 10, 30));
    let at = |m: i64| next + m * MIN;
    let run = |policy, cap| due(&s, next, now, policy, cap, 60 * SEC);

    let skip = run(MissedTicks::Skip, 5);
    assert_eq!(
        (skip.fire.as_slice(), skip.missed),
        ([at(10)].as_slice(), 10)
    );
    // Latest: the on-time 12:10 stands for the late ones.
    let latest = run(MissedTicks::Latest, 5);
    assert_eq!(
        (latest.fire.as_slice(), latest.missed),
        ([at(10)].as_slice(), 10)
    );
    let all = run(MissedTicks::All, 3);
    assert_eq!(
        (all.fire.as_slice(), all.missed),
        ([at(7), at(8), at(9), at(10)].as_slice(), 7)
    );
    let everything = run(MissedTicks::All, 100);
    assert_eq!(
        (everything.fire.clone(), everything.missed),
        ((0..=10).map(at).collect(), 0)
    );
    let none = run(MissedTicks::All, 0);
    assert_eq!(
        (none.fire.as_slice(), none.missed),
        ([at(10)].as_slice(), 10)
    );
    for d in [skip, latest, all, everything, none] {
        assert_eq!(d.next, Some(at(11)));
        assert!(!d.missed_truncated);
    }
}

/// Same downtime but no tick inside the grace window (now 12:09:45, grace 10 s).
#[test]
fn ten_minute_downtime_without_an_on_time_tick() {
    let s = sched("* * * * *", "UTC");
    let (next, now) = (utc(2027, 6, 1, 12, 0, 0), utc(2027, 6, 1, 12, 9, 45));
    let at = |m: i64| next + m * MIN;
    let run = |policy, cap| due(&s, next, now, policy, cap, 10 * SEC);

    let skip = run(MissedTicks::Skip, 5);
    assert_eq!((skip.fire.as_slice(), skip.missed), ([].as_slice(), 10));
    let latest = run(MissedTicks::Latest, 5);
    assert_eq!(
        (latest.fire.as_slice(), latest.missed),
        ([at(9)].as_slice(), 9)
    );
    let all = run(MissedTicks::All, 3);
    assert_eq!(
        (all.fire.as_slice(), all.missed),
        ([at(7), at(8), at(9)].as_slice(), 7)
    );
    for d in [skip, latest, all] {
        assert_eq!(d.next, Some(at(10)));
    }
}

#[test]
fn next_is_strictly_after_now_and_never_before_next_ms() {
    let s = sched("* * * * *", "UTC");
    let tick = utc(2027, 6, 1, 12, 0, 0);
    // A tick exactly at now fires now; next is the one after.
    let d = due(&s, tick, tick, MissedTicks::Latest, 1, 0);
    assert_eq!(
        (d.fire.as_slice(), d.next),
        ([tick].as_slice(), Some(tick + MIN))
    );
    // Called early (next_ms still ahead, ticks before it already handled): nothing fires,
    // and next stays next_ms rather than going back to a handled tick.
    let early = due(
        &s,
        tick + 2 * MIN,
        tick - 10 * SEC,
        MissedTicks::All,
        10,
        60 * SEC,
    );
    assert_eq!(
        early,
        Due {
            fire: vec![],
            missed: 0,
            missed_truncated: false,
            next: Some(tick + 2 * MIN)
        }
    );
    // next_ms between ticks: the first tick at or after it is the first one due.
    let between = due(&s, tick + 30 * SEC, tick + 2 * MIN, MissedTicks::All, 10, 0);
    assert_eq!(between.fire, [tick + MIN, tick + 2 * MIN]);
    assert_eq!(between.next, Some(tick + 3 * MIN));
}

#[test]
fn all_clamps_cap() {
    let s = sched("* * * * * *", "UTC");
    let now = utc(2027, 6, 1, 12, 0, 0);
    let d = due(&s, now - 2 * HOUR, now, MissedTicks::All, u32::MAX, 0);
    assert_eq!(d.fire.len(), MAX_CATCH_UP as usize + 1); // + the on-time tick at now
    assert_eq!(d.fire.first(), Some(&(now - i64::from(MAX_CATCH_UP) * SEC)));
    assert_eq!(d.missed, 2 * 3_600 - u64::from(MAX_CATCH_UP));
    assert!(!d.missed_truncated);
}

#[test]
fn a_year_of_downtime_every_second_is_bounded_and_truncated() {
    let s = sched("* * * * * *", "Europe/Berlin");
    let now = utc(2027, 6, 1, 12, 0, 0);
    let next = now - 365 * DAY;
    for (policy, cap, fired) in [
        (MissedTicks::Skip, 0, 61),
        (MissedTicks::Latest, 1, 61),
        (MissedTicks::All, MAX_CATCH_UP, 61 + MAX_CATCH_UP as usize),
    ] {
        // The cost is bounded by construction (at most MAX_SCAN ticks looked at, the count
        // says so), not asserted in time: machines here are shared and noisy.
        let d = due(&s, next, now, policy, cap, 60 * SEC);
        assert!(d.missed_truncated);
        assert_eq!(d.fire.len(), fired);
        assert_eq!(d.fire.last(), Some(&now));
        assert!(d.fire.windows(2).all(|w| w[1] - w[0] == SEC));
        assert_eq!(d.missed, (MAX_SCAN - fired) as u64, "{policy:?}");
        assert_eq!(d.next, Some(now + SEC));
    }
}

#[test]
fn truncation_is_exact_at_max_scan() {
    let s = sched("* * * * * *", "UTC");
    let now = utc(2027, 6, 1, 12, 0, 0);
    // MAX_SCAN ticks exactly in [next_ms, now]: all looked at, nothing left over.
    let exact = due(
        &s,
        now - (MAX_SCAN as i64 - 1) * SEC,
        now,
        MissedTicks::Skip,
        0,
        0,
    );
    assert_eq!(
        (exact.missed, exact.missed_truncated),
        (MAX_SCAN as u64 - 1, false)
    );
    let one_more = due(
        &s,
        now - MAX_SCAN as i64 * SEC,
        now,
        MissedTicks::Skip,
        0,
        0,
    );
    assert_eq!(
        (one_more.missed, one_more.missed_truncated),
        (MAX_SCAN as u64 - 1, true)
    );
}

#[test]
fn downtime_over_fall_back_catches_up_both_hours() {
    let s = sched("0 * * * *", "America/New_York");
    let d = due(
        &s,
        utc(2027, 11, 7, 4, 0, 0),
        utc(2027, 11, 7, 7, 30, 0),
        MissedTicks::All,
        10,
        60 * SEC,
    );
    assert_eq!(
        d.fire,
        [
            utc(2027, 11, 7, 4, 0, 0),
            utc(2027, 11, 7, 5, 0, 0),
            utc(2027, 11, 7, 6, 0, 0),
            utc(2027, 11, 7, 7, 0, 0)
        ]
    );
    assert_eq!(d.next, Some(utc(2027, 11, 7, 8, 0, 0)));
    // Down from 01:40 EDT to 01:20 EST: 01:45 EDT, 01:00 and 01:15 EST are due.
    let quarter = sched("*/15 * * * *", "America/New_York");
    let d = due(
        &quarter,
        utc(2027, 11, 7, 5, 45, 0),
        utc(2027, 11, 7, 6, 20, 0),
        MissedTicks::All,
        10,
        0,
    );
    assert_eq!(
        d.fire,
        [
            utc(2027, 11, 7, 5, 45, 0),
            utc(2027, 11, 7, 6, 0, 0),
            utc(2027, 11, 7, 6, 15, 0)
        ]
    );
    assert_eq!(d.next, Some(utc(2027, 11, 7, 6, 30, 0)));
}

#[test]
fn missed_ticks_serde() {
    assert_eq!(MissedTicks::default(), MissedTicks::Latest);
    for (policy, json) in [
        (MissedTicks::Skip, "\"skip\""),
        (MissedTicks::Latest, "\"latest\""),
        (MissedTicks::All, "\"all\""),
    ] {
        assert_eq!(serde_json::to_string(&policy).unwrap(), json);
        assert_eq!(serde_json::from_str::<MissedTicks>(json).unwrap(), policy);
    }
    assert!(serde_json::from_str::<MissedTicks>("\"Latest\"").is_err());
}

#[test]
fn schedule_debug_and_clone() {
    let s = sched("0 * * * *", "UTC");
    let copy = s.clone();
    assert_eq!(copy.next_after(0), s.next_after(0));
    assert!(format!("{s:?}").contains("0 * * * *"));
}
