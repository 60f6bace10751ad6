//! One run's execution: its unfinished steps in order, each through the invocation
//! pipeline while the lease keeper holds the lease; each finished step journaled (fenced,
//! group-committed by the store); a failed one retried later or dead-lettered.
//!
//! A failure of the database is never the run's fault: an error while loading the run
//! releases it to the queue after a short delay, no attempt counted, and a journal write
//! that fails is tried again (the guest's result kept) for as long as the lease surely
//! holds. No driver text is stored in a run or returned.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_core::{Charge, CoreError, Invocation};
use airlock_model::{ConnectionId, TenantId, WorkflowSpec};
use airlock_runtime::Call;
use airlock_store::{
    AfterFailure, Claimed, Cost, Finish, Lease, LeaseStatus, RunRecord, StepResult, StoreError,
};
use airlock_telemetry::{RunOutcome, SpanKind, TraceContext};
use serde_json::Value;
use tokio::time::Instant;

use super::Engine;
use super::lease::Hold;
use super::log_budget::{LogBudget, RUN_LOG_BUDGET_BYTES};
use crate::retry::{StepError, backoff_ms};

/// How long a run waits in the queue after the database failed while loading it.
const DEFER_MS: i64 = 1_000;
/// The longest wait between two tries of a journal write.
const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(2);
/// Workflow versions kept parsed, at most (they are immutable: no invalidation).
const MAX_DEFINITIONS: usize = 1_024;

/// Parsed workflow versions by (tenant, workflow, version).
#[derive(Default)]
pub(super) struct Definitions(Mutex<HashMap<(String, String, i64), Arc<WorkflowSpec>>>);

impl Definitions {
    fn get(&self, key: &(String, String, i64)) -> Option<Arc<WorkflowSpec>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn put(&self, key: (String, String, i64), spec: Arc<WorkflowSpec>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_DEFINITIONS {
            map.clear();
        }
        map.insert(key, spec);
    }
}

/// How a guarded step ended.
enum Guarded {
    Done(Box<Result<airlock_core::Ran, CoreError>>),
    /// The lease is gone: write nothing.
    Lost,
    Cancel,
    /// Shutdown's grace is over: release the run.
    Aborted,
}

/// Why a run could not be loaded.
enum LoadError {
    /// The database failed: not the run's fault.
    Store(StoreError),
    /// The run cannot go on (its definition or input is unreadable).
    Broken(&'static str),
}

impl Engine {
    pub(super) async fn execute(&self, claimed: Claimed, mut hold: Hold) {
        let Claimed { lease, run } = claimed;
        let waited = airlock_store::now_ms().saturating_sub(run.run_at);
        self.metrics()
            .run_started(Duration::from_millis(u64::try_from(waited).unwrap_or(0)));
        // This claim's span, under the run's enqueue span: on any process, after a crash or a
        // replay, the run's steps join the trace of the request that created it.
        let claim_span = run
            .trace_id
            .as_deref()
            .and_then(|trace| TraceContext::from_stored(trace, run.trace_parent.as_deref()))
            .map(|parent| {
                let mut span =
                    self.metrics()
                        .spans()
                        .start("run.claim", SpanKind::Consumer, &parent);
                span.set("airlock.tenant", lease.tenant_id.as_str());
                span.set("airlock.run", lease.run_id.as_str());
                span.set("airlock.lease_epoch", lease.epoch);
                span.set("airlock.queue_wait_ms", waited);
                span
            });
        if run.cancel_requested {
            self.finish(&lease, &hold, Finish::Cancelled).await;
            return;
        }
        let (spec, trigger, mut outputs, logged) = match self.load(&lease, &run).await {
            Ok(loaded) => loaded,
            Err(LoadError::Store(error)) => {
                tracing::warn!(%error, "loading a run failed; it goes back to the queue");
                let delay_ms = DEFER_MS + jitter_ms(DEFER_MS);
                self.finish(&lease, &hold, Finish::Deferred { delay_ms })
                    .await;
                return;
            }
            Err(LoadError::Broken(reason)) => {
                let error = StepError::new("internal", reason, false);
                self.fail(&lease, &hold, &run, error).await;
                return;
            }
        };
        let mut log_budget = LogBudget::new(RUN_LOG_BUDGET_BYTES, logged);
        let first = usize::try_from(run.next_step).unwrap_or(usize::MAX);
        let mut attempt_failures = run.attempt;
        let mut last_output = Value::Null;
        for (index, step) in spec.steps.iter().enumerate().skip(first) {
            match hold.status() {
                LeaseStatus::Held => {}
                LeaseStatus::CancelRequested => {
                    self.finish(&lease, &hold, Finish::Cancelled).await;
                    return;
                }
                LeaseStatus::Lost => return,
            }
            if index > first && self.stop.is_cancelled() {
                // Shutting down between steps: the rest is another process's.
                self.finish(&lease, &hold, Finish::Released).await;
                return;
            }
            if self.suspended(&lease.tenant_id).await {
                // Back to the queue, no attempt counted: the claim passes over the tenant
                // (its cap is 0) until the operator resumes it.
                tracing::info!(step = %step.id, "the tenant is suspended; the run goes back to the queue");
                self.finish(&lease, &hold, Finish::Released).await;
                return;
            }
            if let Some(when) = &step.when {
                let context = airlock_model::predicate::Context {
                    trigger: &trigger,
                    steps: &outputs,
                };
                if !when.eval(context) {
                    let last = index + 1 == spec.steps.len();
                    match self.skip(&lease, &hold, index, &step.id, last).await {
                        Some(LeaseStatus::Held | LeaseStatus::CancelRequested) if last => {
                            self.ended(&lease, &hold, RunOutcome::Succeeded, None);
                            return;
                        }
                        Some(LeaseStatus::Held) => {
                            attempt_failures = 0;
                            last_output = Value::Null;
                            continue;
                        }
                        Some(LeaseStatus::CancelRequested) => {
                            self.finish(&lease, &hold, Finish::Cancelled).await;
                            return;
                        }
                        Some(LeaseStatus::Lost) => {
                            hold.lost();
                            tracing::info!(step = %step.id, "lease lost before the journal write; nothing written");
                            return;
                        }
                        None => return,
                    }
                }
            }
            let input = match step.build_input(&trigger, &outputs) {
                Ok(input) => input,
                Err(error) => {
                    // A reference into a skipped step has a name of its own: the workflow,
                    // not the data, is at fault (give the reference a `default`).
                    let kind = if error.skipped_step.is_some() {
                        "skipped_step"
                    } else {
                        "invalid_input"
                    };
                    let error = StepError::new(kind, error.to_string(), false);
                    self.record_failure(
                        &lease,
                        &hold,
                        index,
                        &step.id,
                        &error,
                        Cost::default(),
                        no_logs(),
                        &dead_after(&step.id, index, &error, &run),
                    )
                    .await;
                    return;
                }
            };
            let mut step_span = claim_span.as_ref().map(|claim| {
                let mut span =
                    self.metrics()
                        .spans()
                        .start("run.step", SpanKind::Internal, claim.context());
                span.set("airlock.step", step.id.as_str());
                span.set("airlock.step_index", index_i64(index));
                span.set("airlock.attempt", attempt_failures.saturating_add(1));
                span
            });
            let invocation = Invocation {
                tenant: TenantId::new(&lease.tenant_id),
                connector: Some(step.connector.clone()),
                version: step.version.clone(),
                connection: step.connection.as_deref().map(ConnectionId::new),
                call: Call::Action {
                    action: step.action.clone(),
                    input: input.to_string(),
                },
                // The run was counted once, when it was created.
                charge: Charge::Free,
                timeout_ms: step.timeout_ms,
                idempotency_key: Some(step_key(&lease.run_id, &step.id)),
                trace_context: step_span.as_ref().map(|span| span.context().clone()),
            };
            let ran = match self.guarded(&mut hold, invocation).await {
                Guarded::Done(ran) => *ran,
                Guarded::Lost => {
                    tracing::info!(step = %step.id, "lease lost; the guest was stopped and nothing written");
                    return;
                }
                Guarded::Cancel => {
                    self.finish(&lease, &hold, Finish::Cancelled).await;
                    return;
                }
                Guarded::Aborted => {
                    self.finish(&lease, &hold, Finish::Released).await;
                    return;
                }
            };
            let attempt_error = match &ran {
                Ok(ran) => ran
                    .outcome
                    .result
                    .as_ref()
                    .err()
                    .map(|e| e.kind.as_str().to_owned()),
                Err(CoreError::Store(_)) => None,
                Err(error) => Some(StepError::from_core(error).kind),
            };
            if !matches!(ran, Err(CoreError::Store(_))) {
                self.metrics().step_attempt(attempt_error.as_deref());
            }
            let (output, error, cost, logs) = match ran {
                Ok(ran) => {
                    let outcome = ran.outcome;
                    let cost = cost_of(&outcome.stats);
                    let logs = log_budget.journal(&outcome.logs);
                    match outcome.result {
                        Ok(output) => (Some(output), None, cost, logs),
                        Err(error) => (None, Some(StepError::from_guest(&error)), cost, logs),
                    }
                }
                Err(CoreError::Store(error)) => {
                    // The pipeline could not read what the step needs: the database's
                    // failure, not the step's. No guest ran.
                    tracing::warn!(%error, step = %step.id, "the database failed before the step ran; the run goes back to the queue");
                    let delay_ms = DEFER_MS + jitter_ms(DEFER_MS);
                    self.finish(&lease, &hold, Finish::Deferred { delay_ms })
                        .await;
                    return;
                }
                Err(error) => (
                    None,
                    Some(StepError::from_core(&error)),
                    Cost::default(),
                    no_logs(),
                ),
            };
            if let (Some(span), Some(error)) = (&mut step_span, &error) {
                span.fail(error.kind.as_str());
            }
            drop(step_span);
            if let Some(error) = error {
                let mut run = run.clone();
                run.attempt = attempt_failures;
                self.fail_with_policy(&lease, &hold, &run, &spec, index, error, cost, logs)
                    .await;
                return;
            }
            let output = output.unwrap_or(Value::Null);
            let result = StepResult {
                index: index_i64(index),
                step_id: step.id.clone(),
                skipped: false,
                output: Some(output.to_string()),
                error: None,
                logs,
                cost,
            };
            // The last step's journal write ends the run too: one write instead of two.
            let last = index + 1 == spec.steps.len();
            let finish = last.then(|| output.to_string());
            let written = self
                .persist(&hold, "journaling a step", || {
                    self.store()
                        .journal_step(&lease, &result, finish.as_deref())
                })
                .await;
            match written {
                Some(LeaseStatus::Held | LeaseStatus::CancelRequested) if last => {
                    self.ended(&lease, &hold, RunOutcome::Succeeded, None);
                    return;
                }
                Some(LeaseStatus::Held) => {}
                Some(LeaseStatus::CancelRequested) => {
                    // Journaled; the rest of the run is cancelled.
                    self.finish(&lease, &hold, Finish::Cancelled).await;
                    return;
                }
                Some(LeaseStatus::Lost) => {
                    hold.lost();
                    tracing::info!(step = %step.id, "lease lost before the journal write; nothing written");
                    return;
                }
                // The lease ran out while the database did not answer: the step runs again
                // elsewhere, with the same idempotency key.
                None => return,
            }
            attempt_failures = 0;
            outputs.insert(step.id.clone(), output.clone());
            last_output = output;
        }
        if first >= spec.steps.len()
            && let Some(step) = spec.steps.last()
        {
            // Every step was journaled before this claim (a crash after the last journal
            // write): the run's output is the last step's.
            last_output = outputs.get(&step.id).cloned().unwrap_or(Value::Null);
        }
        self.finish(
            &lease,
            &hold,
            Finish::Succeeded {
                output: last_output.to_string(),
            },
        )
        .await;
    }

    /// Journals step `index` as skipped (its `when` did not hold): no output, no cost; the
    /// last step's write ends the run, as a succeeded step's does (its output `null`).
    async fn skip(
        &self,
        lease: &Lease,
        hold: &Hold,
        index: usize,
        step_id: &str,
        last: bool,
    ) -> Option<LeaseStatus> {
        let result = StepResult {
            index: index_i64(index),
            step_id: step_id.to_owned(),
            skipped: true,
            output: None,
            error: None,
            logs: no_logs(),
            cost: Cost::default(),
        };
        let finish = last.then(|| Value::Null.to_string());
        self.persist(hold, "journaling a skipped step", || {
            self.store().journal_step(lease, &result, finish.as_deref())
        })
        .await
    }

    /// Whether the run's tenant is suspended (the quota's cached second). A failed read is
    /// not a suspension: the step's own reads meet the same database.
    async fn suspended(&self, tenant: &str) -> bool {
        matches!(self.pipeline.quota(tenant).await, Ok(quota) if quota.suspended)
    }

    /// The run's definition, trigger payload, the outputs of its journaled steps and the
    /// bytes of log those steps hold (counted against the run's log budget).
    async fn load(
        &self,
        lease: &Lease,
        run: &RunRecord,
    ) -> Result<(Arc<WorkflowSpec>, Value, BTreeMap<String, Value>, u64), LoadError> {
        let store = self.store();
        let key = (
            lease.tenant_id.clone(),
            run.workflow_id.clone(),
            run.workflow_version,
        );
        let spec = match self.definitions.get(&key) {
            Some(spec) => spec,
            None => {
                let definition = store
                    .workflow_definition(&lease.tenant_id, &run.workflow_id, run.workflow_version)
                    .await
                    .map_err(|e| match e {
                        StoreError::NotFound => {
                            LoadError::Broken("the run's workflow version no longer exists")
                        }
                        other => LoadError::Store(other),
                    })?;
                let spec: WorkflowSpec = serde_json::from_str(&definition)
                    .map_err(|_| LoadError::Broken("the workflow version does not parse"))?;
                let spec = Arc::new(spec);
                self.definitions.put(key, spec.clone());
                spec
            }
        };
        let trigger: Value = serde_json::from_str(&run.input)
            .map_err(|_| LoadError::Broken("the run's input does not parse"))?;
        let mut outputs = BTreeMap::new();
        let mut logged = 0_u64;
        if run.next_step > 0 {
            for step in store
                .run_steps(&lease.tenant_id, &lease.run_id)
                .await
                .map_err(LoadError::Store)?
            {
                // The row of the step about to run is overwritten by its next attempt.
                if step.index < run.next_step {
                    logged = logged.saturating_add(step.logs.len() as u64);
                }
                if step.status == "succeeded"
                    && step.index < run.next_step
                    && let Some(output) = &step.output
                {
                    let output: Value = serde_json::from_str(output)
                        .map_err(|_| LoadError::Broken("a journaled output does not parse"))?;
                    outputs.insert(step.step_id, output);
                }
            }
        }
        Ok((spec, trigger, outputs, logged))
    }

    /// Runs one step's invocation while the lease keeper holds the lease, and stops the
    /// guest (drops its future) when the lease is lost, a cancel is asked for, or shutdown's
    /// grace runs out.
    async fn guarded(&self, hold: &mut Hold, invocation: Invocation) -> Guarded {
        let invoke = self.pipeline.invoke(invocation);
        tokio::pin!(invoke);
        tokio::select! {
            ran = &mut invoke => Guarded::Done(Box::new(ran)),
            _ = self.abort.cancelled() => Guarded::Aborted,
            status = hold.interrupted() => match status {
                LeaseStatus::CancelRequested => Guarded::Cancel,
                _ => Guarded::Lost,
            },
        }
    }

    /// Tries a fenced write until it reaches the database, for as long as the lease surely
    /// holds. `None`: the lease ran out first.
    async fn persist<T, F, Fut>(&self, hold: &Hold, what: &str, write: F) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = Duration::from_millis(50);
        loop {
            let asked = Instant::now();
            match write().await {
                Ok(done) => {
                    hold.extended(asked);
                    return Some(done);
                }
                Err(error) => {
                    if hold.status() == LeaseStatus::Lost {
                        tracing::warn!(%error, "{what} failed and the lease ran out; nothing written");
                        return None;
                    }
                    tracing::warn!(%error, "{what} failed; trying again");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_WRITE_BACKOFF);
        }
    }

    /// A failed step attempt: retried while the policy allows and the failure is
    /// retryable, dead-lettered otherwise.
    #[allow(clippy::too_many_arguments)]
    async fn fail_with_policy(
        &self,
        lease: &Lease,
        hold: &Hold,
        run: &RunRecord,
        spec: &WorkflowSpec,
        index: usize,
        error: StepError,
        cost: Cost,
        logs: String,
    ) {
        let step = &spec.steps[index];
        let declared = match self
            .pipeline
            .connector(&lease.tenant_id, &step.connector, step.version.as_deref())
            .await
        {
            Ok(record) => record
                .manifest
                .actions
                .iter()
                .find(|a| a.name == step.action)
                .and_then(|a| a.retry),
            Err(_) => None,
        };
        let policy = step.retry_policy(declared);
        let failures = u32::try_from(run.attempt.saturating_add(1)).unwrap_or(u32::MAX);
        let after = if error.retryable && failures < policy.max_attempts {
            let wait = backoff_ms(&policy, failures, &error);
            AfterFailure::Retry {
                run_at: airlock_store::now_ms()
                    .saturating_add(i64::try_from(wait).unwrap_or(i64::MAX)),
            }
        } else {
            AfterFailure::Dead {
                error: dead_reason(&step.id, index, &error, failures),
            }
        };
        self.record_failure(lease, hold, index, &step.id, &error, cost, logs, &after)
            .await;
    }

    /// A run that cannot go on (its definition or input unreadable): dead at once.
    async fn fail(&self, lease: &Lease, hold: &Hold, run: &RunRecord, error: StepError) {
        let index = usize::try_from(run.next_step).unwrap_or(0);
        let step_id = format!("#{index}");
        let after = dead_after(&step_id, index, &error, run);
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
    async fn record_failure(
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

    /// Counts and logs a run that ended.
    fn ended(&self, lease: &Lease, hold: &Hold, outcome: RunOutcome, failed: Option<(&str, &str)>) {
        let age = airlock_store::now_ms().saturating_sub(hold.created_at);
        self.metrics().run_finished(
            &lease.tenant_id,
            outcome,
            Duration::from_millis(u64::try_from(age).unwrap_or(0)),
        );
        match failed {
            Some((step, kind)) => tracing::info!(
                tenant = %lease.tenant_id,
                run = %lease.run_id,
                trace = %hold.trace_id,
                step,
                kind,
                "run dead"
            ),
            None => tracing::info!(
                tenant = %lease.tenant_id,
                run = %lease.run_id,
                trace = %hold.trace_id,
                outcome = outcome.as_str(),
                "run ended"
            ),
        }
    }

    fn metrics(&self) -> &airlock_telemetry::Metrics {
        self.pipeline.runtime().metrics()
    }

    async fn finish(&self, lease: &Lease, hold: &Hold, finish: Finish) {
        let written = self
            .persist(hold, "finishing a run", || {
                self.store().finish_run(lease, &finish)
            })
            .await;
        match (written, &finish) {
            (Some(true), Finish::Succeeded { .. }) => {
                self.ended(lease, hold, RunOutcome::Succeeded, None);
            }
            (Some(true), Finish::Cancelled) => {
                self.ended(lease, hold, RunOutcome::Cancelled, None);
            }
            (Some(false), _) => {
                tracing::info!("lease lost before finishing the run; nothing written");
            }
            _ => {}
        }
    }
}

/// The dead letter of a run that cannot go on at step `index`.
fn dead_after(step_id: &str, index: usize, error: &StepError, run: &RunRecord) -> AfterFailure {
    let failures = u32::try_from(run.attempt.saturating_add(1)).unwrap_or(u32::MAX);
    AfterFailure::Dead {
        error: dead_reason(step_id, index, error, failures),
    }
}

/// Up to `bound` ms of jitter, so runs deferred together do not come back together.
fn jitter_ms(bound: i64) -> i64 {
    let bound = u64::try_from(bound.max(1)).unwrap_or(1);
    getrandom::u64().map_or(0, |r| i64::try_from(r % bound).unwrap_or(0))
}

/// A step's idempotency key: the same on every attempt of the step in this run, so an
/// upstream can recognise the repeat of a step re-run after a crash.
pub fn step_key(run_id: &str, step_id: &str) -> String {
    format!("{run_id}:{step_id}")
}

/// The journal's logs of a step that never ran a guest: the shape of a run's logs, empty.
fn no_logs() -> String {
    serde_json::to_string(&airlock_runtime::Logs::default()).unwrap_or_default()
}

fn index_i64(index: usize) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

fn cost_of(stats: &airlock_runtime::Stats) -> Cost {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Cost {
        fuel_used: i(stats.fuel_used),
        duration_us: i(stats.duration_us),
        peak_memory_bytes: i(stats.peak_memory_bytes),
        outbound_requests: i64::from(stats.outbound_requests),
        outbound_bytes: i(stats
            .outbound_bytes_out
            .saturating_add(stats.outbound_bytes_in)),
    }
}

fn dead_reason(step_id: &str, index: usize, error: &StepError, attempts: u32) -> String {
    serde_json::json!({
        "step": step_id,
        "step_index": index,
        "kind": error.kind,
        "message": error.message,
        "connector_kind": error.connector_kind,
        "retryable": error.retryable,
        "attempts": attempts,
    })
    .to_string()
}
