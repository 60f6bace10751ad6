//! A bound on log lines a flood can cause.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets at most `per_window` lines through each `window`; the lines held back are counted
/// and reported with the next line let through, so a flood of refused webhooks writes a
/// few lines a second and says how many it left out.
#[derive(Debug)]
pub struct LogGate {
    per_window: u32,
    window: Duration,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    written: u32,
    held_back: u64,
}

impl LogGate {
    pub fn new(per_window: u32, window: Duration) -> LogGate {
        LogGate {
            per_window,
            window,
            state: Mutex::new(Window {
                started: Instant::now(),
                written: 0,
                held_back: 0,
            }),
        }
    }

    /// `Some(lines held back since the last one written)` when this line may be written.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(state.started) >= self.window {
            state.started = now;
            state.written = 0;
        }
        if state.written < self.per_window {
            state.written += 1;
            Some(std::mem::take(&mut state.held_back))
        } else {
            state.held_back += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_writes_the_budget_then_reports_what_it_held_back() {
        let gate = LogGate::new(3, Duration::from_secs(1));
        let start = Instant::now();
        let written: Vec<_> = (0..1000).filter_map(|_| gate.allow_at(start)).collect();
        assert_eq!(written, [0, 0, 0]);
        assert_eq!(gate.allow_at(start + Duration::from_secs(1)), Some(997));
        assert_eq!(gate.allow_at(start + Duration::from_secs(1)), Some(0));
    }
}
