//! [`Workers`]: the claim loop, one run's steps under a heartbeated lease, and the reaper.
//!
//! A worker claims a run, then runs its unfinished steps in order. While a step's guest runs,
//! the worker renews the lease every `heartbeat`; if the lease is lost (expired and re-queued,
//! taken by another worker) or the run is cancelled, the guest is stopped by dropping its
//! future, and a lost run gets no write at all. Each finished step is journaled in one
//! transaction with the fencing check; a failed one is retried later or dead-lettered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::{Charge, CoreError, Invocation, Pipeline};
use airlock_model::{ConnectionId, TenantId, WorkflowSpec};
use airlock_runtime::Call;
use airlock_store::{
    AfterFailure, Claimed, Cost, Finish, Lease, LeaseStatus, RunRecord, StepResult, Store,
};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::retry::{StepError, backoff_ms};

/// How workers run.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Runs this process works on at once; 0: no workers (an API-only process).
    pub workers: usize,
    /// How long a claim holds without a heartbeat: a killed process's runs are claimable
    /// again this long after its last heartbeat (plus one reaper pass).
    pub lease: Duration,
    /// How often a running step's lease is renewed.
    pub heartbeat: Duration,
    /// How often an idle worker looks at the queue without being woken.
    pub poll: Duration,
    /// How often expired leases are re-queued.
    pub reap_every: Duration,
    /// At shutdown, how long running steps may take to finish before they are stopped and
    /// their runs released.
    pub grace: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            workers: 8,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            reap_every: Duration::from_secs(5),
            grace: Duration::from_secs(10),
        }
    }
}

/// The running workers of this process.
pub struct Workers {
    /// Stop claiming; finish the current step, then release the run.
    stop: CancellationToken,
    /// Stop the current step's guest now and release the run.
    abort: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

struct Worker {
    pipeline: Pipeline,
    id: String,
    options: WorkerOptions,
    stop: CancellationToken,
    abort: CancellationToken,
}

impl Workers {
    /// Starts `options.workers` workers, the reaper and (PostgreSQL) the listener for other
    /// processes' enqueues, on the current tokio runtime.
    pub fn start(pipeline: Pipeline, options: WorkerOptions) -> Workers {
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let tasks = TaskTracker::new();
        let process = uuid::Uuid::new_v4().simple().to_string();
        if options.workers > 0 {
            let store = pipeline.store().clone();
            let listen_stop = stop.clone();
            tasks.spawn(async move { store.listen_for_runs(listen_stop).await });
            tasks.spawn(reaper(
                pipeline.store().clone(),
                options.reap_every,
                stop.clone(),
            ));
        }
        for n in 0..options.workers {
            let worker = Arc::new(Worker {
                pipeline: pipeline.clone(),
                id: format!("{process}-{n}"),
                options: options.clone(),
                stop: stop.clone(),
                abort: abort.clone(),
            });
            tasks.spawn(async move { worker.run().await });
        }
        tasks.close();
        Workers {
            stop,
            abort,
            tasks,
            grace: options.grace,
        }
    }

    /// Stops claiming, lets running steps finish for up to the grace period, then stops
    /// the rest; every run held is released to the queue for another process.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if tokio::time::timeout(self.grace, self.tasks.wait())
            .await
            .is_err()
        {
            self.abort.cancel();
            self.tasks.wait().await;
        }
    }
}

async fn reaper(store: Store, every: Duration, stop: CancellationToken) {
    loop {
        match store.reap().await {
            Ok(0) => {}
            Ok(moved) => tracing::info!(moved, "re-queued runs whose lease expired"),
            Err(error) => tracing::warn!(%error, "reaping expired run leases failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// How a guarded step ended.
enum Guarded {
    Done(Result<airlock_core::Ran, CoreError>),
    /// The lease is gone: write nothing.
    Lost,
    Cancel,
    /// Shutdown's grace is over: release the run.
    Aborted,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Worker {
    fn store(&self) -> &Store {
        self.pipeline.store()
    }

    async fn run(&self) {
        let lease_ms = millis(self.options.lease);
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            // Registered before the claim, so a wake-up between an empty claim and the wait
            // is not lost.
            let wakeup = self.store().wakeups().clone();
            let notified = wakeup.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.store().claim_run(&self.id, lease_ms).await {
                Ok(Some(claimed)) => {
                    let span = tracing::info_span!(
                        "run",
                        run = %claimed.lease.run_id,
                        tenant = %claimed.lease.tenant_id
                    );
                    self.execute(claimed).instrument(span).await;
                    continue;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "claiming a run failed"),
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = &mut notified => {}
                _ = tokio::time::sleep(self.options.poll) => {}
            }
        }
    }

    async fn execute(&self, claimed: Claimed) {
        let Claimed { lease, run } = claimed;
        if run.cancel_requested {
            self.finish(&lease, Finish::Cancelled).await;
            return;
        }
        let (spec, trigger, mut outputs) = match self.load(&lease, &run).await {
            Ok(loaded) => loaded,
            Err(error) => {
                let error = StepError::new("internal", error, false);
                self.fail(&lease, &run, None, error, Cost::default(), no_logs())
                    .await;
                return;
            }
        };
        let first = usize::try_from(run.next_step).unwrap_or(usize::MAX);
        let mut attempt_failures = run.attempt;
        let mut last_output = Value::Null;
        for (index, step) in spec.steps.iter().enumerate().skip(first) {
            if index > first && self.stop.is_cancelled() {
                // Shutting down between steps: the rest is another process's.
                self.finish(&lease, Finish::Released).await;
                return;
            }
            let input = match step.build_input(&trigger, &outputs) {
                Ok(input) => input,
                Err(error) => {
                    let error = StepError::new("invalid_input", error.to_string(), false);
                    self.fail(&lease, &run, Some(index), error, Cost::default(), no_logs())
                        .await;
                    return;
                }
            };
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
            };
            let ran = match self.guarded(&lease, invocation).await {
                Guarded::Done(ran) => ran,
                Guarded::Lost => {
                    tracing::info!(step = %step.id, "lease lost; the guest was stopped and nothing written");
                    return;
                }
                Guarded::Cancel => {
                    self.finish(&lease, Finish::Cancelled).await;
                    return;
                }
                Guarded::Aborted => {
                    self.finish(&lease, Finish::Released).await;
                    return;
                }
            };
            let (output, error, cost, logs) = match ran {
                Ok(ran) => {
                    let outcome = ran.outcome;
                    let cost = cost_of(&outcome.stats);
                    let logs = serde_json::to_string(&outcome.logs).unwrap_or_else(|_| no_logs());
                    match outcome.result {
                        Ok(output) => (Some(output), None, cost, logs),
                        Err(error) => (None, Some(StepError::from_guest(&error)), cost, logs),
                    }
                }
                Err(error) => (
                    None,
                    Some(StepError::from_core(&error)),
                    Cost::default(),
                    no_logs(),
                ),
            };
            if let Some(error) = error {
                let mut run = run.clone();
                run.attempt = attempt_failures;
                self.fail_with_policy(&lease, &run, &spec, index, error, cost, logs)
                    .await;
                return;
            }
            let output = output.unwrap_or(Value::Null);
            let result = StepResult {
                index: index_i64(index),
                step_id: step.id.clone(),
                output: Some(output.to_string()),
                error: None,
                logs,
                cost,
            };
            // The last step's journal write ends the run too: one commit instead of two.
            let last = index + 1 == spec.steps.len();
            let finish = last.then(|| output.to_string());
            match self
                .store()
                .journal_step(&lease, &result, finish.as_deref())
                .await
            {
                Ok(LeaseStatus::Held) if last => return,
                Ok(LeaseStatus::Held) => {}
                Ok(LeaseStatus::CancelRequested) if last => return,
                Ok(LeaseStatus::CancelRequested) => {
                    // Journaled; the rest of the run is cancelled.
                    self.finish(&lease, Finish::Cancelled).await;
                    return;
                }
                Ok(LeaseStatus::Lost) => {
                    tracing::info!(step = %step.id, "lease lost before the journal write; nothing written");
                    return;
                }
                Err(error) => {
                    // Not journaled: the lease runs out and the step runs again elsewhere,
                    // with the same idempotency key.
                    tracing::warn!(%error, step = %step.id, "journaling a step failed");
                    return;
                }
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
            Finish::Succeeded {
                output: last_output.to_string(),
            },
        )
        .await;
    }

    /// The run's definition, trigger payload and the outputs of its journaled steps.
    async fn load(
        &self,
        lease: &Lease,
        run: &RunRecord,
    ) -> Result<(WorkflowSpec, Value, BTreeMap<String, Value>), String> {
        let store = self.store();
        let definition = store
            .workflow_definition(&lease.tenant_id, &run.workflow_id, run.workflow_version)
            .await
            .map_err(|e| format!("the workflow version cannot be read: {e}"))?;
        let spec: WorkflowSpec = serde_json::from_str(&definition)
            .map_err(|e| format!("the workflow version does not parse: {e}"))?;
        let trigger: Value = serde_json::from_str(&run.input)
            .map_err(|e| format!("the run's input does not parse: {e}"))?;
        let mut outputs = BTreeMap::new();
        for step in store
            .run_steps(&lease.tenant_id, &lease.run_id)
            .await
            .map_err(|e| format!("the run's journal cannot be read: {e}"))?
        {
            if step.status == "succeeded"
                && step.index < run.next_step
                && let Some(output) = &step.output
            {
                let output: Value = serde_json::from_str(output)
                    .map_err(|e| format!("a journaled output does not parse: {e}"))?;
                outputs.insert(step.step_id, output);
            }
        }
        Ok((spec, trigger, outputs))
    }

    /// Runs one step's invocation while keeping the lease: renews it every heartbeat, and
    /// stops the guest (drops its future) when the lease is lost, a cancel is asked for, or
    /// shutdown's grace runs out. A heartbeat the database does not answer keeps the guest
    /// running only until the lease would have expired.
    async fn guarded(&self, lease: &Lease, invocation: Invocation) -> Guarded {
        let lease_ms = millis(self.options.lease);
        let invoke = self.pipeline.invoke(invocation);
        tokio::pin!(invoke);
        let mut held_until = Instant::now() + self.options.lease;
        let mut beat = tokio::time::interval(self.options.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        loop {
            tokio::select! {
                ran = &mut invoke => return Guarded::Done(ran),
                _ = self.abort.cancelled() => return Guarded::Aborted,
                _ = beat.tick() => {
                    let asked = Instant::now();
                    match self.store().heartbeat(lease, lease_ms).await {
                        Ok(LeaseStatus::Held) => held_until = asked + self.options.lease,
                        Ok(LeaseStatus::CancelRequested) => return Guarded::Cancel,
                        Ok(LeaseStatus::Lost) => return Guarded::Lost,
                        Err(error) => {
                            tracing::warn!(%error, "heartbeat failed");
                            if Instant::now() >= held_until {
                                return Guarded::Lost;
                            }
                        }
                    }
                }
            }
        }
    }

    /// A failed step attempt: retried while the policy allows and the failure is
    /// retryable, dead-lettered otherwise.
    #[allow(clippy::too_many_arguments)]
    async fn fail_with_policy(
        &self,
        lease: &Lease,
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
        self.record_failure(lease, index, &step.id, &error, cost, logs, &after)
            .await;
    }

    /// A run that cannot go on (unreadable definition, a mapping that finds nothing):
    /// dead at once.
    async fn fail(
        &self,
        lease: &Lease,
        run: &RunRecord,
        index: Option<usize>,
        error: StepError,
        cost: Cost,
        logs: String,
    ) {
        let index = index.unwrap_or(usize::try_from(run.next_step).unwrap_or(0));
        let step_id = format!("#{index}");
        let failures = u32::try_from(run.attempt.saturating_add(1)).unwrap_or(u32::MAX);
        let after = AfterFailure::Dead {
            error: dead_reason(&step_id, index, &error, failures),
        };
        self.record_failure(lease, index, &step_id, &error, cost, logs, &after)
            .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_failure(
        &self,
        lease: &Lease,
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
            output: None,
            error: serde_json::to_string(error).ok(),
            logs,
            cost,
        };
        match self.store().fail_step(lease, &result, after).await {
            Ok(true) => {}
            Ok(false) => tracing::info!("lease lost before recording a failure; nothing written"),
            Err(error) => tracing::warn!(%error, "recording a step failure failed"),
        }
    }

    async fn finish(&self, lease: &Lease, finish: Finish) {
        match self.store().finish_run(lease, &finish).await {
            Ok(true) => {}
            Ok(false) => tracing::info!("lease lost before finishing the run; nothing written"),
            Err(error) => tracing::warn!(%error, "finishing a run failed"),
        }
    }
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
