//! A step that failed: retried by its policy or dead-lettered, and a dead run's failure
//! handler queued in the same write.

use airlock_model::{ActionStep, MappingError};
use airlock_store::{AfterFailure, Cost, FailureHandler, Lease, RunRecord, StepResult};
use airlock_telemetry::RunOutcome;
use serde_json::Value;

use super::Engine;
use super::lease::Hold;
use super::run::{Step, index_i64, no_logs};
use crate::retry::{StepError, backoff_ms};

impl Engine {
    /// A failed step attempt: retried while the policy allows and the failure is
    /// retryable, dead-lettered otherwise. `item`: the failed iteration of a `for_each`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fail_with_policy(
        &self,
        lease: &Lease,
        hold: &Hold,
        step: &Step<'_>,
        action: &ActionStep,
        failed_id: &str,
        item: Option<usize>,
        error: StepError,
        cost: Cost,
        logs: String,
    ) {
        let declared = match self
            .pipeline
            .connector(
                &lease.tenant_id,
                &action.connector,
                action.version.as_deref(),
            )
            .await
        {
            Ok(record) => record
                .manifest
                .actions
                .iter()
                .find(|a| a.name == action.action)
                .and_then(|a| a.retry),
            Err(_) => None,
        };
        let policy = action.retry_policy(declared);
        let failures = u32::try_from(step.attempt_failures.saturating_add(1)).unwrap_or(u32::MAX);
        let after = if error.retryable && failures < policy.max_attempts {
            let wait = backoff_ms(&policy, failures, &error);
            AfterFailure::Retry {
                run_at: airlock_store::now_ms()
                    .saturating_add(i64::try_from(wait).unwrap_or(i64::MAX)),
            }
        } else {
            dead(
                failed_id,
                step.index,
                item,
                &error,
                failures,
                step.run,
                step.handled,
            )
        };
        // The journal row is the node's (a `for_each`'s, for one of its items); the dead
        // letter names the step that failed.
        self.record_failure(
            lease,
            hold,
            step.index,
            &step.node.id,
            &error,
            cost,
            logs,
            &after,
        )
        .await;
    }

    /// Dead-letters the run at its step, at once: a failure no attempt could change (its
    /// input, a `for_each`'s items or output, a `sleep`'s instant), no guest cost.
    pub(super) async fn dead_now(
        &self,
        lease: &Lease,
        hold: &Hold,
        step: &Step<'_>,
        error: &StepError,
    ) {
        self.record_failure(
            lease,
            hold,
            step.index,
            &step.node.id,
            error,
            Cost::default(),
            no_logs(),
            &dead_after(
                &step.node.id,
                step.index,
                None,
                error,
                step.run,
                step.handled,
            ),
        )
        .await;
    }

    /// A run that cannot go on (its definition or input unreadable): dead at once.
    pub(super) async fn fail(&self, lease: &Lease, hold: &Hold, run: &RunRecord, error: StepError) {
        let index = usize::try_from(run.next_step).unwrap_or(0);
        let step_id = format!("#{index}");
        // The definition could not be read: no failure handler either.
        let after = dead_after(&step_id, index, None, &error, run, false);
        self.record_failure(
            lease,
            hold,
            index,
            &step_id,
            &error,
            Cost::default(),
            no_logs(),
            &after,
        )
        .await;
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_failure(
        &self,
        lease: &Lease,
        hold: &Hold,
        index: usize,
        step_id: &str,
        error: &StepError,
        cost: Cost,
        logs: String,
        after: &AfterFailure,
    ) {
        let result = StepResult {
            index: index_i64(index),
            next: index_i64(index),
            step_id: step_id.to_owned(),
            skipped: false,
            output: None,
            error: serde_json::to_string(error).ok(),
            logs,
            cost,
        };
        let written = self
            .persist(hold, "recording a step failure", || {
                self.store().fail_step(lease, &result, after)
            })
            .await;
        match written {
            Some(true) => match after {
                AfterFailure::Retry { run_at } => {
                    self.metrics().step_retry(&error.kind);
                    tracing::info!(
                        tenant = %lease.tenant_id,
                        run = %lease.run_id,
                        trace = %hold.trace_id,
                        step = step_id,
                        kind = %error.kind,
                        next_attempt_at_ms = run_at,
                        "run retrying"
                    );
                }
                AfterFailure::Dead { .. } => {
                    self.metrics().dead_letter(&error.kind);
                    self.ended(lease, hold, RunOutcome::Dead, Some((step_id, &error.kind)));
                }
            },
            Some(false) => {
                tracing::info!("lease lost before recording a failure; nothing written");
            }
            None => {}
        }
    }
}

/// The dead letter of a run that cannot go on at step `index`.
fn dead_after(
    step_id: &str,
    index: usize,
    item: Option<usize>,
    error: &StepError,
    run: &RunRecord,
    handled: bool,
) -> AfterFailure {
    let failures = u32::try_from(run.attempt.saturating_add(1)).unwrap_or(u32::MAX);
    dead(step_id, index, item, error, failures, run, handled)
}

/// The dead letter, and when `handled` the failure-handler run queued with it: its trigger
/// is the dead run's id, its dead letter, the step that failed and its trigger.
fn dead(
    step_id: &str,
    index: usize,
    item: Option<usize>,
    error: &StepError,
    failures: u32,
    run: &RunRecord,
    handled: bool,
) -> AfterFailure {
    let reason = dead_reason(step_id, index, item, error, failures);
    let handler = (handled && run.handles.is_none()).then(|| {
        let trigger: Value = serde_json::from_str(&run.input).unwrap_or(Value::Null);
        let error: Value = serde_json::from_str(&reason).unwrap_or(Value::Null);
        FailureHandler {
            id: format!("run_{}", uuid::Uuid::new_v4().simple()),
            input: serde_json::json!({
                "run_id": run.id,
                "workflow_id": run.workflow_id,
                "error": error,
                "failed_step": step_id,
                "trigger": trigger,
            })
            .to_string(),
        }
    });
    let notice = notice(run, step_id, &reason);
    AfterFailure::Dead {
        error: reason,
        handler,
        notice,
    }
}

/// The `data` of the `run.dead` event the tenant's dead-letter webhook gets (when it has
/// one): what a receiver needs to find the run and decide, not the run's trigger payload,
/// which leaves the platform only through the tenant's own workflows.
fn notice(run: &RunRecord, step_id: &str, reason: &str) -> String {
    let error: Value = serde_json::from_str(reason).unwrap_or(Value::Null);
    serde_json::json!({
        "run_id": run.id,
        "workflow_id": run.workflow_id,
        "workflow_version": run.workflow_version,
        "trigger_id": run.trigger_id,
        "handles": run.handles,
        "failed_step": step_id,
        "error": error,
        "trace_id": run.trace_id,
    })
    .to_string()
}

/// An input that could not be built. A reference into a skipped step has a name of its own:
/// the workflow, not the data, is at fault (give the reference a `default`).
pub(super) fn mapping_error(error: &MappingError) -> StepError {
    let kind = if error.skipped_step.is_some() {
        "skipped_step"
    } else {
        "invalid_input"
    };
    StepError::new(kind, error.to_string(), false)
}

fn dead_reason(
    step_id: &str,
    index: usize,
    item: Option<usize>,
    error: &StepError,
    attempts: u32,
) -> String {
    let mut reason = serde_json::json!({
        "step": step_id,
        "step_index": index,
        "kind": error.kind,
        "message": error.message,
        "connector_kind": error.connector_kind,
        "retryable": error.retryable,
        "attempts": attempts,
    });
    if let (Some(item), Some(object)) = (item, reason.as_object_mut()) {
        object.insert("item".into(), item.into());
    }
    reason.to_string()
}
