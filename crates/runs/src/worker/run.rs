//! One run's execution: the nodes of its workflow's program from `next_step`, each through
//! the invocation pipeline while the lease keeper holds the lease (a `switch` picks the
//! node it jumps to; a `for_each` and a `sleep` have modules of their own); each finished
//! node journaled with the node it goes on at (fenced, group-committed by the store); a
//! failed one retried later or dead-lettered (`failure.rs`).
//!
//! A failure of the database is never the run's fault: an error while loading the run
//! releases it to the queue after a short delay, no attempt counted, and a journal write
//! that fails is tried again (the guest's result kept) for as long as the lease surely
//! holds. No driver text is stored in a run or returned.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_core::{Charge, CoreError, Invocation};
use airlock_model::predicate::Context;
use airlock_model::program::{Node, Op};
use airlock_model::{ActionStep, ConnectionId, Program, TenantId, WorkflowSpec};
use airlock_runtime::Call;
use airlock_store::{Claimed, Cost, Finish, Lease, LeaseStatus, RunRecord, StepResult, StoreError};
use airlock_telemetry::{RunOutcome, SpanKind, TraceContext};
use serde_json::Value;
use tokio::time::Instant;

use super::Engine;
use super::failure::mapping_error;
use super::lease::{Hold, Watch};
use super::log_budget::{LogBudget, RUN_LOG_BUDGET_BYTES};
use crate::retry::StepError;

/// How long a run waits in the queue after the database failed while loading it.
const DEFER_MS: i64 = 1_000;
/// The longest wait between two tries of a journal write.
const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(2);
/// Workflow versions kept parsed, at most (they are immutable: no invalidation).
const MAX_DEFINITIONS: usize = 1_024;

/// Lowered workflow versions by (tenant, workflow, version).
#[derive(Default)]
pub(super) struct Definitions(Mutex<HashMap<(String, String, i64), Arc<Programs>>>);

/// A workflow version's two programs: its steps, and its `on_failure` steps.
pub(super) struct Programs {
    steps: Program,
    on_failure: Program,
}

impl Definitions {
    fn get(&self, key: &(String, String, i64)) -> Option<Arc<Programs>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn put(&self, key: (String, String, i64), spec: Arc<Programs>) {
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

/// A claimed run's state, read from the database.
struct Loaded {
    programs: Arc<Programs>,
    trigger: Value,
    /// The journaled steps' outputs by step id.
    outputs: BTreeMap<String, Value>,
    /// Bytes of log the journaled steps hold (counted against the run's log budget).
    logged: u64,
    /// The output of the step journaled last (`null` if it was skipped, or none was).
    last_output: Value,
}

/// The step a worker is at.
#[derive(Clone, Copy)]
pub(super) struct Step<'a> {
    pub(super) run: &'a RunRecord,
    pub(super) program: &'a Program,
    pub(super) index: usize,
    pub(super) node: &'a Node,
    /// Failed attempts of this step so far.
    pub(super) attempt_failures: i64,
    /// A death of the run queues its workflow's failure handler.
    pub(super) handled: bool,
    pub(super) claim_span: Option<&'a airlock_telemetry::Span>,
}

/// Why a run could not be loaded.
enum LoadError {
    /// The database failed: not the run's fault.
    Store(StoreError),
    /// The run cannot go on (its definition or input is unreadable).
    Broken(&'static str),
}

/// What a step that ran produced, to journal.
pub(super) struct Done {
    pub(super) output: Value,
    pub(super) cost: Cost,
    pub(super) logs: String,
}

impl Done {
    pub(super) fn bare(output: Value) -> Done {
        Done {
            output,
            cost: Cost::default(),
            logs: no_logs(),
        }
    }
}

/// Why a step stopped without a result to journal, the most drastic first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Stop {
    /// The lease is gone: write nothing.
    Lost,
    /// The lease ran out while the database did not answer: nothing to do.
    Gone,
    Cancel,
    /// Shutting down: release the run.
    Aborted,
    /// The database failed before the guest ran: not the run's fault.
    StoreDown,
}

/// One attempt of an action.
pub(super) enum Attempt {
    Ran {
        result: Result<Value, StepError>,
        cost: Cost,
        logs: airlock_runtime::Logs,
    },
    Stopped(Stop),
}

/// Whether the run goes on after a journal write.
enum Flow {
    Next,
    Stop,
}

impl Engine {
    pub(super) async fn execute(&self, claimed: Claimed, hold: Hold) {
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
        let loaded = match self.load(&lease, &run).await {
            Ok(loaded) => loaded,
            Err(LoadError::Store(error)) => {
                tracing::warn!(%error, "loading a run failed; it goes back to the queue");
                self.stopped(&lease, &hold, Stop::StoreDown).await;
                return;
            }
            Err(LoadError::Broken(reason)) => {
                let error = StepError::new("internal", reason, false);
                self.fail(&lease, &hold, &run, error).await;
                return;
            }
        };
        let Loaded {
            programs,
            trigger,
            mut outputs,
            logged,
            last_output,
        } = loaded;
        // A failure-handler run runs the `on_failure` steps; a death of any other run of a
        // workflow that has them queues one.
        let (program, handled) = match &run.handles {
            Some(_) => (&programs.on_failure, false),
            None => (&programs.steps, !programs.on_failure.is_empty()),
        };
        let mut log_budget = LogBudget::new(RUN_LOG_BUDGET_BYTES, logged);
        let first = usize::try_from(run.next_step).unwrap_or(usize::MAX);
        let mut attempt_failures = run.attempt;
        let mut index = first;
        while let Some(node) = program.nodes.get(index) {
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
                tracing::info!(step = %node.id, "the tenant is suspended; the run goes back to the queue");
                self.finish(&lease, &hold, Finish::Released).await;
                return;
            }
            let context = Context::new(&trigger, &outputs);
            let mut next = node.next;
            let done = if node.when.as_ref().is_some_and(|when| !when.eval(context)) {
                None
            } else {
                let step = Step {
                    run: &run,
                    program,
                    index,
                    node,
                    attempt_failures,
                    handled,
                    claim_span: claim_span.as_ref(),
                };
                let done = match &node.op {
                    Op::Action(action) => {
                        self.action(&lease, &hold, &step, action, context, &mut log_budget)
                            .await
                    }
                    Op::Switch { cases, default } => {
                        let chosen = cases.iter().find(|(_, when, _)| when.eval(context));
                        let (branch, start) = match chosen {
                            Some((id, _, start)) => (id.as_str(), *start),
                            None => ("default", *default),
                        };
                        next = start.unwrap_or(node.next);
                        Some(Done::bare(serde_json::json!({ "branch": branch })))
                    }
                    Op::Sleep(sleep) => self.sleep(&lease, &hold, &step, sleep, context).await,
                    Op::ForEach {
                        items,
                        max_items,
                        concurrency,
                        body,
                    } => {
                        let each = super::for_each::Iterate {
                            items,
                            max_items: *max_items,
                            concurrency: *concurrency,
                            body,
                        };
                        self.for_each(&lease, &hold, &step, &each, context, &mut log_budget)
                            .await
                    }
                };
                // `None`: the step ended the hold itself (failed, stopped, slept).
                let Some(done) = done else {
                    return;
                };
                Some(done)
            };
            // A step whose `when` did not hold is journaled `skipped`, with no output.
            let skipped = done.is_none();
            let done = done.unwrap_or_else(|| Done::bare(Value::Null));
            let result = StepResult {
                index: index_i64(index),
                next: index_i64(next),
                step_id: node.id.clone(),
                skipped,
                output: (!skipped).then(|| done.output.to_string()),
                error: None,
                logs: done.logs,
                cost: done.cost,
            };
            match self
                .advance(&lease, &hold, program, &result, &done.output)
                .await
            {
                Flow::Next => {}
                Flow::Stop => return,
            }
            attempt_failures = 0;
            if !skipped {
                outputs.insert(node.id.clone(), done.output);
            }
            index = next;
        }
        // Every step was journaled before this claim (woken from a last `sleep`, or a crash
        // after the last journal write): the run's output is its last journaled step's.
        self.finish(
            &lease,
            &hold,
            Finish::Succeeded {
                output: last_output.to_string(),
            },
        )
        .await;
    }

    /// Journals a finished (or skipped) step and moves the run on; the write that reaches the
    /// end also ends the run. Says whether the run goes on in this hold.
    async fn advance(
        &self,
        lease: &Lease,
        hold: &Hold,
        program: &Program,
        result: &StepResult,
        output: &Value,
    ) -> Flow {
        let last = usize::try_from(result.next).map_or(true, |next| next >= program.len());
        let finish = last.then(|| output.to_string());
        let written = self
            .persist(hold, "journaling a step", || {
                self.store().journal_step(lease, result, finish.as_deref())
            })
            .await;
        match written {
            Some(LeaseStatus::Held | LeaseStatus::CancelRequested) if last => {
                self.ended(lease, hold, RunOutcome::Succeeded, None);
                Flow::Stop
            }
            Some(LeaseStatus::Held) => Flow::Next,
            Some(LeaseStatus::CancelRequested) => {
                // Journaled; the rest of the run is cancelled.
                self.finish(lease, hold, Finish::Cancelled).await;
                Flow::Stop
            }
            Some(LeaseStatus::Lost) => {
                hold.lost();
                tracing::info!(step = %result.step_id, "lease lost before the journal write; nothing written");
                Flow::Stop
            }
            // The lease ran out while the database did not answer: the step runs again
            // elsewhere, with the same idempotency key.
            None => Flow::Stop,
        }
    }

    /// Runs an action step once; `None` when the run does not go on in this hold (the
    /// failure recorded, or the hold ended).
    async fn action(
        &self,
        lease: &Lease,
        hold: &Hold,
        step: &Step<'_>,
        action: &ActionStep,
        context: Context<'_>,
        log_budget: &mut LogBudget,
    ) -> Option<Done> {
        let input = match action.build_input(context) {
            Ok(input) => input,
            Err(error) => {
                let error = mapping_error(&error);
                self.dead_now(lease, hold, step, &error).await;
                return None;
            }
        };
        let key = step_key(&lease.run_id, &step.node.id);
        let attempt = self
            .attempt(lease, hold, step, &step.node.id, None, action, input, key)
            .await;
        match attempt {
            Attempt::Stopped(stop) => {
                self.stopped(lease, hold, stop).await;
                None
            }
            Attempt::Ran {
                result: Ok(output),
                cost,
                logs,
            } => Some(Done {
                output,
                cost,
                logs: log_budget.journal(&logs),
            }),
            Attempt::Ran {
                result: Err(error),
                cost,
                logs,
            } => {
                let logs = log_budget.journal(&logs);
                self.fail_with_policy(
                    lease,
                    hold,
                    step,
                    action,
                    &step.node.id,
                    None,
                    error,
                    cost,
                    logs,
                )
                .await;
                None
            }
        }
    }

    /// One attempt of an action (a step, or a step of one iteration), in its span, stopped
    /// when the lease is lost, a cancel is asked for, or shutdown's grace runs out.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn attempt(
        &self,
        lease: &Lease,
        hold: &Hold,
        step: &Step<'_>,
        step_id: &str,
        item: Option<usize>,
        action: &ActionStep,
        input: Value,
        idempotency_key: String,
    ) -> Attempt {
        let mut step_span = step.claim_span.map(|claim| {
            let mut span =
                self.metrics()
                    .spans()
                    .start("run.step", SpanKind::Internal, claim.context());
            span.set("airlock.step", step_id);
            span.set("airlock.step_index", index_i64(step.index));
            if let Some(item) = item {
                span.set("airlock.item", index_i64(item));
            }
            span.set("airlock.attempt", step.attempt_failures.saturating_add(1));
            span
        });
        let invocation = Invocation {
            tenant: TenantId::new(&lease.tenant_id),
            connector: Some(action.connector.clone()),
            version: action.version.clone(),
            connection: action.connection.as_deref().map(ConnectionId::new),
            call: Call::Action {
                action: action.action.clone(),
                input: input.to_string(),
            },
            // The run was counted once, when it was created.
            charge: Charge::Free,
            timeout_ms: action.timeout_ms,
            idempotency_key: Some(idempotency_key),
            trace_context: step_span.as_ref().map(|span| span.context().clone()),
        };
        let ran = match self.guarded(hold.watch(), invocation).await {
            Guarded::Done(ran) => *ran,
            Guarded::Lost => {
                tracing::info!(
                    step = step_id,
                    "lease lost; the guest was stopped and nothing written"
                );
                return Attempt::Stopped(Stop::Lost);
            }
            Guarded::Cancel => return Attempt::Stopped(Stop::Cancel),
            Guarded::Aborted => return Attempt::Stopped(Stop::Aborted),
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
        let attempt = match ran {
            Ok(ran) => {
                let outcome = ran.outcome;
                Attempt::Ran {
                    cost: cost_of(&outcome.stats),
                    result: outcome
                        .result
                        .map_err(|error| StepError::from_guest(&error)),
                    logs: outcome.logs,
                }
            }
            Err(CoreError::Store(error)) => {
                // The pipeline could not read what the step needs: the database's
                // failure, not the step's. No guest ran.
                tracing::warn!(%error, step = step_id, "the database failed before the step ran; the run goes back to the queue");
                Attempt::Stopped(Stop::StoreDown)
            }
            Err(error) => Attempt::Ran {
                result: Err(StepError::from_core(&error)),
                cost: Cost::default(),
                logs: airlock_runtime::Logs::default(),
            },
        };
        if let (
            Some(span),
            Attempt::Ran {
                result: Err(error), ..
            },
        ) = (&mut step_span, &attempt)
        {
            span.fail(error.kind.as_str());
        }
        attempt
    }

    /// Ends the hold of a run whose step stopped without a result.
    pub(super) async fn stopped(&self, lease: &Lease, hold: &Hold, stop: Stop) {
        match stop {
            Stop::Lost | Stop::Gone => {}
            Stop::Cancel => self.finish(lease, hold, Finish::Cancelled).await,
            Stop::Aborted => self.finish(lease, hold, Finish::Released).await,
            Stop::StoreDown => {
                let delay_ms = DEFER_MS + jitter_ms(DEFER_MS);
                self.finish(lease, hold, Finish::Deferred { delay_ms })
                    .await;
            }
        }
    }

    /// Whether the run's tenant is suspended (the quota's cached second). A failed read is
    /// not a suspension: the step's own reads meet the same database.
    pub(super) async fn suspended(&self, tenant: &str) -> bool {
        matches!(self.pipeline.quota(tenant).await, Ok(quota) if quota.suspended)
    }

    /// The run's definition, trigger payload, the outputs of its journaled steps and the
    /// bytes of log those steps hold (counted against the run's log budget).
    async fn load(&self, lease: &Lease, run: &RunRecord) -> Result<Loaded, LoadError> {
        let store = self.store();
        let key = (
            lease.tenant_id.clone(),
            run.workflow_id.clone(),
            run.workflow_version,
        );
        let programs = match self.definitions.get(&key) {
            Some(programs) => programs,
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
                let programs = Arc::new(Programs {
                    steps: Program::new(&spec),
                    on_failure: Program::handler(&spec),
                });
                self.definitions.put(key, programs.clone());
                programs
            }
        };
        let trigger: Value = serde_json::from_str(&run.input)
            .map_err(|_| LoadError::Broken("the run's input does not parse"))?;
        let mut outputs = BTreeMap::new();
        let mut logged = 0_u64;
        let mut last_output = Value::Null;
        if run.next_step > 0 {
            for step in store
                .run_steps(&lease.tenant_id, &lease.run_id)
                .await
                .map_err(LoadError::Store)?
            {
                // The row of the step about to run is overwritten by its next attempt.
                // Rows come in index order and a run only jumps forward: the last one before
                // `next_step` is the step journaled last.
                if step.index < run.next_step {
                    logged = logged.saturating_add(step.logs.len() as u64);
                    last_output = Value::Null;
                }
                if step.status == "succeeded"
                    && step.index < run.next_step
                    && let Some(output) = &step.output
                {
                    let output: Value = serde_json::from_str(output)
                        .map_err(|_| LoadError::Broken("a journaled output does not parse"))?;
                    last_output = output.clone();
                    outputs.insert(step.step_id, output);
                }
            }
        }
        let iterates = |program: &Program| {
            program
                .nodes
                .iter()
                .any(|node| matches!(node.op, Op::ForEach { .. }))
        };
        if iterates(&programs.steps) || iterates(&programs.on_failure) {
            // Its items' logs count too, whichever claim journaled them.
            let items = store
                .run_items_log_bytes(&lease.tenant_id, &lease.run_id)
                .await
                .map_err(LoadError::Store)?;
            logged = logged.saturating_add(items);
        }
        Ok(Loaded {
            programs,
            trigger,
            outputs,
            logged,
            last_output,
        })
    }

    /// Runs one step's invocation while the lease keeper holds the lease, and stops the
    /// guest (drops its future) when the lease is lost, a cancel is asked for, or shutdown's
    /// grace runs out.
    async fn guarded(&self, mut watch: Watch, invocation: Invocation) -> Guarded {
        let invoke = self.pipeline.invoke(invocation);
        tokio::pin!(invoke);
        tokio::select! {
            ran = &mut invoke => Guarded::Done(Box::new(ran)),
            _ = self.abort.cancelled() => Guarded::Aborted,
            status = watch.interrupted() => match status {
                LeaseStatus::CancelRequested => Guarded::Cancel,
                _ => Guarded::Lost,
            },
        }
    }

    /// Tries a fenced write until it reaches the database, for as long as the lease surely
    /// holds. `None`: the lease ran out first.
    pub(super) async fn persist<T, F, Fut>(&self, hold: &Hold, what: &str, write: F) -> Option<T>
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

    /// Counts and logs a run that ended.
    pub(super) fn ended(
        &self,
        lease: &Lease,
        hold: &Hold,
        outcome: RunOutcome,
        failed: Option<(&str, &str)>,
    ) {
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

    pub(super) fn metrics(&self) -> &airlock_telemetry::Metrics {
        self.pipeline.runtime().metrics()
    }

    pub(super) async fn finish(&self, lease: &Lease, hold: &Hold, finish: Finish) {
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
pub(super) fn no_logs() -> String {
    serde_json::to_string(&airlock_runtime::Logs::default()).unwrap_or_default()
}

pub(super) fn index_i64(index: usize) -> i64 {
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
