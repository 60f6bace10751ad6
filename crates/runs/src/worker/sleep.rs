//! A `sleep` step: journaled, and the run back in the queue until it is due, in one write;
//! the wait holds no worker, lease or slot.

use airlock_model::predicate::Context;
use airlock_model::workflow::{MAX_SLEEP_MS, SleepStep, build_template};
use airlock_store::{Cost, Lease, LeaseStatus, StepResult};
use airlock_telemetry::RunOutcome;
use serde_json::Value;

use super::Engine;
use super::failure::mapping_error;
use super::lease::Hold;
use super::run::{Done, Step, index_i64, no_logs};
use crate::retry::StepError;

impl Engine {
    /// A `sleep`: due already, it is done at once; otherwise it is journaled and the run
    /// goes back to the queue until it is due, in one write (`None`).
    pub(super) async fn sleep(
        &self,
        lease: &Lease,
        hold: &Hold,
        step: &Step<'_>,
        sleep: &SleepStep,
        context: Context<'_>,
    ) -> Option<Done> {
        let now = airlock_store::now_ms();
        let until = match (sleep.ms, &sleep.until) {
            (Some(ms), _) => Ok(now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))),
            (None, Some(template)) => build_template(template, context)
                .map_err(|error| mapping_error(&error))
                .and_then(|until| {
                    instant_of(&until).ok_or_else(|| {
                        StepError::new(
                            "invalid_input",
                            "sleep `until`: not an RFC 3339 date-time or milliseconds since the epoch",
                            false,
                        )
                    })
                }),
            (None, None) => Err(StepError::new("internal", "a sleep without a length", false)),
        };
        let latest = now.saturating_add(i64::try_from(MAX_SLEEP_MS).unwrap_or(i64::MAX));
        let until = until.and_then(|until| {
            if until > latest {
                Err(StepError::new(
                    "invalid_input",
                    "sleep `until`: more than 30 days away",
                    false,
                ))
            } else {
                Ok(until)
            }
        });
        let until = match until {
            Ok(until) => until,
            Err(error) => {
                self.dead_now(lease, hold, step, &error).await;
                return None;
            }
        };
        let output = serde_json::json!({ "until_ms": until });
        if until <= now {
            return Some(Done::bare(output));
        }
        let result = StepResult {
            index: index_i64(step.index),
            next: index_i64(step.node.next),
            step_id: step.node.id.clone(),
            skipped: false,
            output: Some(output.to_string()),
            error: None,
            logs: no_logs(),
            cost: Cost::default(),
        };
        let written = self
            .persist(hold, "journaling a sleep", || {
                self.store().journal_sleep(lease, &result, until)
            })
            .await;
        match written {
            Some(LeaseStatus::Lost) => hold.lost(),
            // A cancel asked for meanwhile: the same write cancelled the run.
            Some(LeaseStatus::CancelRequested) => {
                self.ended(lease, hold, RunOutcome::Cancelled, None);
            }
            Some(LeaseStatus::Held) => tracing::info!(
                tenant = %lease.tenant_id,
                run = %lease.run_id,
                step = %step.node.id,
                until_ms = until,
                "run sleeping"
            ),
            None => {}
        }
        None
    }
}

/// A `sleep`'s `until`: an RFC 3339 date-time or milliseconds since the epoch.
fn instant_of(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => airlock_model::predicate::instant_ms(text),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}
