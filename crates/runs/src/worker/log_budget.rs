//! The run's log budget: how much of its steps' logs one run keeps in its journal, in total.
//!
//! Each invocation's log is capped by the tenant's `max_log_bytes`, but a run has up to
//! `MAX_STEPS` steps: at the caps its journal held steps × the per-step cap (~9 MB a run).
//! The run's steps share [`RUN_LOG_BUDGET_BYTES`] of stored log JSON: a step's log is kept
//! whole while it fits in what is left, then its first lines that fit are kept and a marker
//! line says the rest went; a step past the budget keeps the marker alone. Dropped lines are
//! counted in the log's `dropped_lines` and `dropped_bytes`, as the per-invocation caps do.
//!
//! The budget is enforced here, before the journal write, so the store stays a plain writer.
//! A run resumed by another claim (a retry, a replay, a crash) counts the logs its journaled
//! steps already hold.

use airlock_runtime::{LogLevel, LogLine, LogSource, Logs};

/// Bytes of step-log JSON one run keeps in its journal, its steps together. Past it each step
/// stores at most [`MARKER_LOG_BYTES`]. Documented in `docs/limits.md`.
pub const RUN_LOG_BUDGET_BYTES: u64 = 1024 * 1024;

/// The most a step's stored log takes once the budget is spent: the log envelope, the marker
/// line and the dropped counts at their widest.
pub const MARKER_LOG_BYTES: u64 = 256;

/// What is left of one run's log budget while its steps run.
#[derive(Debug)]
pub(super) struct LogBudget {
    limit: u64,
    used: u64,
}

impl LogBudget {
    /// A budget of `limit` bytes of which the run's journaled steps already hold `used`.
    pub(super) fn new(limit: u64, used: u64) -> Self {
        LogBudget { limit, used }
    }

    /// The step's log as the journal stores it (JSON), within what is left of the budget.
    pub(super) fn journal(&mut self, logs: &Logs) -> String {
        let whole = to_json(logs);
        let left = self.limit.saturating_sub(self.used);
        // An empty log is smaller than any marker: nothing to gain by replacing it.
        if len(&whole) <= left || logs.lines.is_empty() {
            self.charge(&whole);
            return whole;
        }
        let marker = LogLine {
            level: LogLevel::Warn,
            source: LogSource::Log,
            message: format!(
                "[logs truncated: run log budget of {} bytes reached]",
                self.limit
            ),
        };
        let envelope = Logs {
            lines: vec![marker.clone()],
            dropped_bytes: u64::MAX,
            dropped_lines: u64::MAX,
        };
        // Each kept line adds its JSON and a comma to the envelope.
        let mut size = len(&to_json(&envelope));
        let fit = logs
            .lines
            .iter()
            .take_while(|line| {
                size = size.saturating_add(len(&to_json(line)) + 1);
                size <= left
            })
            .count();
        let gone = &logs.lines[fit..];
        let mut kept = Logs {
            lines: logs.lines[..fit].to_vec(),
            dropped_bytes: logs.dropped_bytes.saturating_add(
                gone.iter()
                    .map(|line| line.message.len() as u64)
                    .sum::<u64>(),
            ),
            dropped_lines: logs.dropped_lines.saturating_add(gone.len() as u64),
        };
        kept.lines.push(marker);
        let json = to_json(&kept);
        self.charge(&json);
        json
    }

    fn charge(&mut self, json: &str) {
        self.used = self.used.saturating_add(len(json));
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Plain structs of strings and numbers: serializing them cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn len(text: &str) -> u64 {
    text.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: usize, message_bytes: usize) -> Logs {
        Logs {
            lines: (0..lines)
                .map(|i| LogLine {
                    level: LogLevel::Info,
                    source: LogSource::Stdout,
                    message: format!("{i:04}{}", "x".repeat(message_bytes - 4)),
                })
                .collect(),
            dropped_bytes: 7,
            dropped_lines: 1,
        }
    }

    fn parse(json: &str) -> Logs {
        serde_json::from_str(json).expect("the stored log is a log")
    }

    #[test]
    fn logs_are_kept_whole_until_the_budget_then_cut_with_a_marker() {
        let step = log(100, 100);
        let whole = to_json(&step);
        let mut budget = LogBudget::new(len(&whole) * 5 / 2, 0);
        assert_eq!(budget.journal(&step), whole);
        assert_eq!(budget.journal(&step), whole);

        let cut = parse(&budget.journal(&step));
        let kept = cut.lines.len() - 1;
        assert!(kept > 0 && kept < 100, "{kept} lines kept");
        assert_eq!(cut.lines[..kept], step.lines[..kept]);
        let marker = &cut.lines[kept].message;
        assert!(
            marker.starts_with("[logs truncated: run log budget of"),
            "{marker}"
        );
        assert_eq!(cut.dropped_lines, 1 + (100 - kept) as u64);
        assert_eq!(cut.dropped_bytes, 7 + 100 * (100 - kept) as u64);
        assert!(budget.used <= budget.limit, "{budget:?}");

        // Spent: the marker alone, bounded.
        for _ in 0..10 {
            let json = budget.journal(&step);
            assert!(len(&json) <= MARKER_LOG_BYTES, "{json}");
            let only = parse(&json);
            assert_eq!(only.lines.len(), 1);
            assert_eq!(only.dropped_lines, 101);
        }
        assert!(budget.used <= budget.limit + 10 * MARKER_LOG_BYTES);
    }

    #[test]
    fn what_earlier_claims_stored_counts_and_empty_logs_stay_empty() {
        let step = log(10, 50);
        let mut budget = LogBudget::new(RUN_LOG_BUDGET_BYTES, RUN_LOG_BUDGET_BYTES);
        assert_eq!(parse(&budget.journal(&step)).lines.len(), 1);
        let empty = Logs::default();
        assert_eq!(budget.journal(&empty), to_json(&empty));
    }

    #[test]
    fn the_widest_marker_log_fits_its_bound() {
        let mut budget = LogBudget::new(u64::MAX - 1, u64::MAX - 1);
        let mut step = log(1, 10);
        step.dropped_bytes = u64::MAX;
        step.dropped_lines = u64::MAX;
        let json = budget.journal(&step);
        assert!(
            len(&json) <= MARKER_LOG_BYTES,
            "{} bytes: {json}",
            json.len()
        );
    }
}
