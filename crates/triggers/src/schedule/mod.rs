//! Cron schedules for cron triggers: parsing, fire times, and what to fire after downtime.
//!
//! # Expressions
//!
//! Five fields (`minute hour day-of-month month day-of-week`, firing at second 0) or six
//! (a leading `second` field), in croner's dialect: ranges `1-5`, steps `*/15`, lists
//! `1,15`, names `MON`/`JAN`, `L`, `W`, `#`. Nicknames such as `@hourly` and the
//! seven-field form with a year are refused ([`ScheduleError::FieldCount`]): a schedule is
//! stored and shown as the fields it was written with, so there is one way to write each.
//!
//! # Time
//!
//! Times are unix milliseconds (UTC); fire times are always whole seconds. The
//! expression is matched against the wall clock of an IANA time zone, and each matching
//! wall-clock time is mapped to the instant(s) at which it happens. The scheduled instant
//! is an idempotency key, so [`Schedule::next_after`] is strictly increasing when chained and
//! never yields an instant twice.
//!
//! # Daylight saving
//!
//! croner classifies a pattern as *fixed-time* when its second, minute and hour fields are
//! each one plain value (`30 2 * * *`), and as *interval* otherwise (`0 * * * *`,
//! `*/15 * * * *`, `0 9-17 * * *`). Like Vixie cron:
//!
//! - **Spring forward** (a gap, e.g. New York 02:00→03:00): a fixed-time job whose time
//!   falls in the gap fires once, at the first instant after the gap (02:30 fires at 03:00
//!   local); interval jobs have no ticks in the gap (hourly: 01:00 EST, then 03:00 EDT, one
//!   real hour apart).
//! - **Fall back** (an overlap, e.g. New York 02:00→01:00): a fixed-time job fires once, in
//!   the first pass (01:30 EDT only); an interval job fires in both passes (hourly: 01:00 EDT
//!   and 01:00 EST), so "every 15 minutes" stays every 15 real minutes.
//!
//! The gap rule and the fixed/interval split are croner's. croner's own search is not used
//! for the zone, though: in an overlap it returns only first-pass times and, started inside
//! the second pass, returns an *earlier* instant than its start (croner 3.0.1); its iterator
//! yields the two passes out of order. So croner only matches wall-clock times here (run in
//! UTC, where nothing is skipped or repeated) and the mapping to instants is done below.

use std::str::FromStr;

use chrono::{
    DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone,
    Timelike,
};
use chrono_tz::{GapInfo, Tz};
use croner::{Cron, JobType, errors::CronError};

#[cfg(test)]
mod tests;

/// Longest expression accepted, in bytes. Real schedules are a few dozen; the bound keeps
/// error messages (which quote the expression) and stored rows small.
pub const MAX_EXPRESSION_LEN: usize = 200;

/// Most ticks [`due`] looks at in one call, so a long outage on a dense schedule stays cheap.
pub const MAX_SCAN: usize = 10_000;

/// Largest `cap` accepted for [`MissedTicks::All`].
pub const MAX_CATCH_UP: u32 = 1_000;

/// Why an expression or time zone was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// Not 5 or 6 whitespace-separated fields (nicknames like `@hourly` count as one).
    #[error("a cron expression has 5 fields (or 6 with leading seconds), found {found}")]
    FieldCount { found: usize },
    /// croner refused the expression; its message, reduced to printable ASCII.
    #[error("invalid cron expression: {0}")]
    Expression(String),
    /// Not an IANA time zone name known to chrono-tz.
    #[error("unknown time zone {0:?}")]
    UnknownTimeZone(String),
    /// Longer than [`MAX_EXPRESSION_LEN`] bytes.
    #[error("cron expression longer than {MAX_EXPRESSION_LEN} bytes")]
    TooLong,
    /// Valid, but matches no date at all (e.g. `0 0 30 2 *`, February 30th).
    #[error("cron expression never fires")]
    Never,
}

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    tz: Tz,
    cron: Cron,
    /// croner's fixed-time class: decides the daylight-saving rules (module docs).
    fixed_time: bool,
    /// The matching hours, minutes and seconds: the previous matching time on the same date
    /// without a croner search (see [`Schedule::prev_match`]).
    times: TimesOfDay,
}

/// The matching hours, minutes and seconds as bit sets (bit `n` set: value `n` matches).
#[derive(Debug, Clone)]
struct TimesOfDay {
    hours: u64,
    minutes: u64,
    seconds: u64,
}

impl TimesOfDay {
    fn of(cron: &Cron) -> TimesOfDay {
        let p = &cron.pattern;
        TimesOfDay {
            hours: bits(24, |v| p.hour_match(v)),
            minutes: bits(60, |v| p.minute_match(v)),
            seconds: bits(60, |v| p.second_match(v)),
        }
    }

    /// The latest matching time of day before `time`, if one is on the same day.
    fn before(&self, time: NaiveTime) -> Option<NaiveTime> {
        let (h, m, s) = (time.hour(), time.minute(), time.second());
        let (h, m, s) = if let Some(s) = highest_below(self.seconds, s) {
            (h, m, s)
        } else if let Some(m) = highest_below(self.minutes, m) {
            (h, m, highest_below(self.seconds, 60)?)
        } else {
            let h = highest_below(self.hours, h)?;
            (
                h,
                highest_below(self.minutes, 60)?,
                highest_below(self.seconds, 60)?,
            )
        };
        NaiveTime::from_hms_opt(h, m, s)
    }
}

/// The values in `0..max` that match, as a bit set.
fn bits(max: u32, matches: impl Fn(u32) -> Result<bool, CronError>) -> u64 {
    (0..max)
        .filter(|&v| matches(v).unwrap_or(false))
        .fold(0, |bits, v| bits | 1 << v)
}

/// The highest set bit below `limit` (at most 63).
fn highest_below(bits: u64, limit: u32) -> Option<u32> {
    let below = bits & ((1u64 << limit) - 1);
    (below != 0).then(|| 63 - below.leading_zeros())
}

impl Schedule {
    /// Parses 5 fields (minute precision) or 6 (leading seconds field) in an IANA time zone,
    /// e.g. `"Europe/Berlin"`, `"UTC"`.
    ///
    /// Refuses expressions that match no date in a whole 400-year Gregorian cycle (after
    /// which the calendar repeats), so a stored schedule always has a next tick.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Schedule, ScheduleError> {
        if expression.len() > MAX_EXPRESSION_LEN {
            return Err(ScheduleError::TooLong);
        }
        let found = expression.split_whitespace().count();
        if !(5..=6).contains(&found) {
            return Err(ScheduleError::FieldCount { found });
        }
        let cron = Cron::from_str(expression)
            .map_err(|e| ScheduleError::Expression(sanitize(&e.to_string())))?;
        let tz = Tz::from_str(time_zone)
            .map_err(|_| ScheduleError::UnknownTimeZone(sanitize(time_zone)))?;
        if !matches_some_date(&cron) {
            return Err(ScheduleError::Never);
        }
        let fixed_time = cron.determine_job_type() == JobType::FixedTime;
        let times = TimesOfDay::of(&cron);
        Ok(Schedule {
            expression: expression.to_owned(),
            tz,
            cron,
            fixed_time,
            times,
        })
    }

    /// The expression as given to [`Schedule::parse`].
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA name of the time zone.
    pub fn time_zone(&self) -> &str {
        self.tz.name()
    }

    /// The first fire time strictly after `after_ms`; `None` when there is none before croner's
    /// search limit (the year 5000), or `after_ms` is outside chrono's range.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        // Fire times are whole seconds, so "after 12:00:00.500" is "after 12:00:00".
        self.first_after(after_ms.div_euclid(1000))
            .map(|s| s * 1000)
    }

    /// Up to `n` fire times strictly after `after_ms`, ascending.
    pub fn upcoming(&self, after_ms: i64, n: usize) -> Vec<i64> {
        std::iter::successors(self.next_after(after_ms), |&t| self.next_after(t))
            .take(n)
            .collect()
    }

    /// The first fire time (unix seconds) strictly after `after`.
    ///
    /// Wall-clock times increase with instants except in an overlap, where the clock runs
    /// through the same hour twice. Two searches cover that:
    /// - forward over wall times after the current one, keeping instants after `after`
    ///   (inside the second pass, this skips first-pass instants of later wall times);
    /// - when `after` is in the first pass of an overlap, the second pass of the wall times
    ///   already seen, which comes next in real time (interval jobs only: fixed-time jobs
    ///   fire once, in the first pass).
    fn first_after(&self, after: i64) -> Option<i64> {
        let wall = self.at(after)?.naive_local();
        let mut forward = None;
        let mut cursor = self.next_wall(wall, false);
        while let Some(w) = cursor {
            let local = self.tz.from_local_datetime(&w);
            if let Some(t) = self
                .fire_instants(&w, &local)
                .into_iter()
                .flatten()
                .find(|&t| t > after)
            {
                forward = Some(t);
                break;
            }
            cursor = match local {
                // Jump over the gap: an every-second job would otherwise step through it.
                LocalResult::None => {
                    gap_end(&w, &self.tz).and_then(|end| self.next_wall(end.naive_local(), true))
                }
                _ => self.next_wall(w, false),
            };
        }
        let second_pass = match self.tz.from_local_datetime(&wall) {
            LocalResult::Ambiguous(first, second)
                if !self.fixed_time && first.timestamp() == after =>
            {
                let start = self.transition(first.timestamp(), second.timestamp())?;
                let overlap_start = self.at(start)?.naive_local();
                self.next_wall(overlap_start, true)
                    .filter(|w| *w <= wall)
                    .and_then(|w| self.tz.from_local_datetime(&w).latest())
                    .map(|dt| dt.timestamp())
            }
            _ => None,
        };
        min_some(forward, second_pass)
    }

    /// The last fire time (unix seconds) at or before `at`: [`Schedule::first_after`] mirrored.
    /// When `at` is in the second pass of an overlap, first-pass instants of later wall times
    /// (up to the overlap's end) are earlier in real time, for every kind of job.
    fn last_at_or_before(&self, at: i64) -> Option<i64> {
        let wall = self.at(at)?.naive_local();
        let mut backward = None;
        let mut cursor = self.prev_wall(wall, true);
        while let Some(w) = cursor {
            let local = self.tz.from_local_datetime(&w);
            if let Some(t) = self
                .fire_instants(&w, &local)
                .into_iter()
                .flatten()
                .rev()
                .find(|&t| t <= at)
            {
                backward = Some(t);
                break;
            }
            cursor = match local {
                LocalResult::None => {
                    gap_start(&w, &self.tz).and_then(|start| self.prev_wall(start, false))
                }
                _ => self.prev_match(w),
            };
        }
        let first_pass = match self.tz.from_local_datetime(&wall) {
            LocalResult::Ambiguous(first, second) if second.timestamp() == at => {
                let start = self.transition(first.timestamp(), second.timestamp())?;
                let overlap_end = self.at(start - 1)?.naive_local() + TimeDelta::seconds(1);
                self.prev_wall(overlap_end, false)
                    .filter(|w| *w > wall)
                    .and_then(|w| self.tz.from_local_datetime(&w).earliest())
                    .map(|dt| dt.timestamp())
            }
            _ => None,
        };
        backward.max(first_pass)
    }

    /// Ticks (unix seconds) at or before `at`, newest first: what [`due`] walks.
    ///
    /// Each step is [`Schedule::last_at_or_before`], except for the common case, which is
    /// cheap: when the current tick's own wall-clock time matches and is unambiguous, and the
    /// previous matching wall-clock time is unambiguous too, that one's instant is the previous
    /// tick (no matching time lies between them, so no gap, overlap or second pass can either).
    fn ticks_down_from(&self, at: i64) -> impl Iterator<Item = i64> + '_ {
        let first = self
            .last_at_or_before(at)
            .map(|t| (t, self.matching_single_wall(t)));
        std::iter::successors(first, |&(tick, wall)| {
            if let Some(prev) = wall.and_then(|w| self.prev_match(w))
                && let LocalResult::Single(t) = self.tz.from_local_datetime(&prev)
            {
                return Some((t.timestamp(), Some(prev)));
            }
            let t = self.last_at_or_before(tick - 1)?;
            Some((t, self.matching_single_wall(t)))
        })
        .map(|(tick, _)| tick)
    }

    /// The wall-clock time of `tick` when it matches the expression and happens only once.
    fn matching_single_wall(&self, tick: i64) -> Option<NaiveDateTime> {
        let wall = self.at(tick)?.naive_local();
        let single = matches!(self.tz.from_local_datetime(&wall), LocalResult::Single(_));
        let matches = self.cron.is_time_matching(&wall.and_utc()).unwrap_or(false);
        (single && matches).then_some(wall)
    }

    /// The matching wall-clock time before `wall`, which itself matches: on the same date that
    /// is a lookup in the hour, minute and second values; across dates it takes croner.
    fn prev_match(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        match self.times.before(wall.time()) {
            Some(time) => Some(wall.date().and_time(time)),
            None => self.prev_wall(wall, false),
        }
    }

    /// The instants (unix seconds, ascending) at which a matching wall-clock time fires,
    /// under the daylight-saving rules in the module docs.
    fn fire_instants(
        &self,
        wall: &NaiveDateTime,
        local: &LocalResult<DateTime<Tz>>,
    ) -> [Option<i64>; 2] {
        match local {
            LocalResult::Single(t) => [Some(t.timestamp()), None],
            LocalResult::Ambiguous(first, second) => [
                Some(first.timestamp()),
                (!self.fixed_time).then(|| second.timestamp()),
            ],
            LocalResult::None if self.fixed_time => {
                [gap_end(wall, &self.tz).map(|t| t.timestamp()), None]
            }
            LocalResult::None => [None, None],
        }
    }

    /// The first instant in `(first, second]` whose UTC offset differs from `first`'s: where
    /// the second pass of an overlap begins. `first` and `second` are the two instants of one
    /// ambiguous wall-clock time, so their offsets differ and a binary search finds the change.
    fn transition(&self, mut first: i64, mut second: i64) -> Option<i64> {
        let offset = self.offset(first)?;
        while second - first > 1 {
            let mid = first + (second - first) / 2;
            if self.offset(mid)? == offset {
                first = mid;
            } else {
                second = mid;
            }
        }
        Some(second)
    }

    fn offset(&self, secs: i64) -> Option<i32> {
        Some(self.at(secs)?.offset().fix().local_minus_utc())
    }

    fn at(&self, secs: i64) -> Option<DateTime<Tz>> {
        DateTime::from_timestamp(secs, 0).map(|utc| utc.with_timezone(&self.tz))
    }

    /// The next wall-clock time matching the expression, searched in UTC, where every wall
    /// time exists exactly once, so croner's daylight-saving handling never applies.
    fn next_wall(&self, wall: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        let found = self
            .cron
            .find_next_occurrence(&wall.and_utc(), inclusive)
            .ok()?;
        Some(found.naive_utc())
    }

    fn prev_wall(&self, wall: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        let found = self
            .cron
            .find_previous_occurrence(&wall.and_utc(), inclusive)
            .ok()?;
        Some(found.naive_utc())
    }
}

/// Whether the expression matches any wall-clock time. croner searches until the year 5000,
/// so starting at 4600 covers exactly one 400-year Gregorian cycle (146,097 days, a whole
/// number of weeks): anything that ever matches matches in it, and an expression that never
/// matches (February 30th) costs a bounded search instead of one from today to 5000.
fn matches_some_date(cron: &Cron) -> bool {
    let Some(start) = NaiveDate::from_ymd_opt(4600, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0))
    else {
        return false;
    };
    cron.find_next_occurrence(&start.and_utc(), true).is_ok()
}

/// The first instant after the gap that `wall` falls in (where a fixed-time job snaps to).
fn gap_end(wall: &NaiveDateTime, tz: &Tz) -> Option<DateTime<Tz>> {
    GapInfo::new(wall, tz)?.end
}

/// The first wall-clock time of the gap that `wall` falls in.
fn gap_start(wall: &NaiveDateTime, tz: &Tz) -> Option<NaiveDateTime> {
    GapInfo::new(wall, tz)?.begin.map(|(start, _)| start)
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Error text echoes user input (croner quotes the offending field): keep it printable ASCII
/// and bounded so it is safe to log and to return in an API error.
fn sanitize(text: &str) -> String {
    text.chars()
        .take(2 * MAX_EXPRESSION_LEN)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// What to do with ticks that were due while no process was running (downtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedTicks {
    /// Fire none of the late ticks.
    Skip,
    /// Fire the most recent late tick, once, unless an on-time tick fires anyway.
    #[default]
    Latest,
    /// Fire the most recent `cap` late ticks (at most [`MAX_CATCH_UP`]).
    All,
}

impl MissedTicks {
    /// The serde spelling, which is also how it is stored.
    pub fn as_str(self) -> &'static str {
        match self {
            MissedTicks::Skip => "skip",
            MissedTicks::Latest => "latest",
            MissedTicks::All => "all",
        }
    }

    pub fn parse(text: &str) -> Option<MissedTicks> {
        [MissedTicks::Skip, MissedTicks::Latest, MissedTicks::All]
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}

/// Ticks to fire now, and what was missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Tick times (unix ms) to fire now, ascending.
    pub fire: Vec<i64>,
    /// Late ticks not fired. A lower bound when `missed_truncated`.
    pub missed: u64,
    /// More ticks were due than [`MAX_SCAN`]; the oldest were not looked at (nor counted).
    pub missed_truncated: bool,
    /// The first tick after `now_ms` (and at or after `next_ms`): the trigger's new next tick.
    pub next: Option<i64>,
}

/// Decides which ticks to fire now.
///
/// `next_ms` is the trigger's next scheduled tick (the earliest tick not yet handled), `<=
/// now_ms`. The ticks considered are the schedule's ticks in `[next_ms, now_ms]`.
///
/// A tick no older than `grace_ms` at `now_ms` (`tick >= now_ms - grace_ms`) is on time and
/// always fires. Older ones are late (the service was down) and follow `policy`:
/// - `Skip` fires none;
/// - `Latest` fires the most recent late tick, unless an on-time tick fires in this same
///   call (it stands for them);
/// - `All` fires the most recent `cap` late ticks (`cap` is clamped to [`MAX_CATCH_UP`]).
///
/// Late ticks not fired are counted in `missed`. `fire` is ascending; `next` is the first
/// tick after `now_ms` (never before `next_ms`, so a tick is not handed out twice), `None` if
/// the schedule never fires again.
///
/// The ticks are walked backwards from `now_ms`, so the ones that fire are found first and
/// only counting is left for the oldest. At most [`MAX_SCAN`] ticks are looked at: after a
/// year of downtime on an every-second schedule, `missed` is then a lower bound and
/// `missed_truncated` is true.
pub fn due(
    schedule: &Schedule,
    next_ms: i64,
    now_ms: i64,
    policy: MissedTicks,
    cap: u32,
    grace_ms: i64,
) -> Due {
    let on_time_from = now_ms.saturating_sub(grace_ms.max(0));
    let (mut on_time, mut late) = (Vec::new(), Vec::new());
    let mut missed = 0u64;
    let mut ticks = schedule
        .ticks_down_from(now_ms.div_euclid(1000))
        .map(|secs| secs * 1000)
        .take_while(|&tick| tick >= next_ms);
    for tick in ticks.by_ref().take(MAX_SCAN) {
        if tick >= on_time_from {
            on_time.push(tick);
        } else if late.len() < late_to_fire(policy, cap, !on_time.is_empty()) {
            late.push(tick);
        } else {
            missed += 1;
        }
    }
    // Ticks beyond the scan were neither looked at nor counted.
    let missed_truncated = ticks.next().is_some();
    let fire = late
        .into_iter()
        .rev()
        .chain(on_time.into_iter().rev())
        .collect();
    let next = schedule.next_after(now_ms.max(next_ms.saturating_sub(1)));
    Due {
        fire,
        missed,
        missed_truncated,
        next,
    }
}

/// How many late ticks `policy` fires. On-time ticks are found first (the walk goes
/// backwards), so `Latest` knows whether one of them already stands for the late ones.
fn late_to_fire(policy: MissedTicks, cap: u32, on_time_fires: bool) -> usize {
    match policy {
        MissedTicks::Skip => 0,
        MissedTicks::Latest if on_time_fires => 0,
        MissedTicks::Latest => 1,
        MissedTicks::All => cap.min(MAX_CATCH_UP) as usize,
    }
}
