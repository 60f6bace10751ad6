//! Durable runs: workflows, and the workers that run them through the invocation pipeline.
//!
//! - [`Runs`]: what the API calls. Saving workflows (the definition's own rules, then the
//!   tenant's connectors, actions and connections), creating runs (idempotency key,
//!   `runs_per_hour`, queue limits), cancel and replay (audited).
//! - [`Workers`]: claim runs from the database queue (fair across tenants, within each
//!   tenant's concurrency quota, across processes), run their steps one by one under a
//!   heartbeated lease, journal each step's output with the fencing check, retry with
//!   backoff, dead-letter what cannot succeed; a reaper re-queues runs of dead workers.
//!
//! The queue itself (claiming, fencing, the journal) is `airlock-store`'s `runs` module; the
//! definition format is `airlock-model`'s `workflow`.

mod background;
mod error;
mod expiry;
pub mod notices;
mod rate;
pub mod retention;
pub mod retry;
mod scheduler;
mod triggers;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use airlock_core::Pipeline;
use airlock_model::{TenantId, WorkflowSpec};
use airlock_store::{
    Cancelled, Enqueued, KeptItems, NewRun, ReplayAdmission, ReplayRefusal, RunRecord,
    WorkflowRecord,
};
use airlock_telemetry::{SpanKind, TraceContext};
use serde_json::Value;

pub use error::RunsError;
pub use expiry::KeyExpiry;
pub use notices::{HookSpec, HookView, NoticeOptions, Notices, TestDelivery};
pub use retention::{PruneReport, Retention};
pub use scheduler::{Scheduler, SchedulerOptions};
pub use triggers::{
    DEFAULT_RATE_PER_MINUTE, Delivered, HookError, MAX_TRIGGERS_PER_TENANT, Overlap, Trigger,
    TriggerSpec, WithSecret,
};
pub use worker::{MARKER_LOG_BYTES, RUN_LOG_BUDGET_BYTES, WorkerOptions, Workers, step_key};

/// Runs one tenant may have waiting, unless the operator says otherwise.
pub const DEFAULT_MAX_QUEUED_PER_TENANT: u64 = 10_000;
/// Runs waiting across all tenants beyond which new runs are refused (503).
pub const DEFAULT_MAX_QUEUE_DEPTH: i64 = 100_000;
/// How long a read of the queue depth is reused.
const DEPTH_TTL_MS: i64 = 1_000;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Idempotency keys only triggers give their runs.
const RESERVED_KEY_PREFIXES: [&str; 3] = ["cron:", "hook:", "failure:"];
/// How long an idempotency key holds its run, unless the operator says otherwise (Stripe's
/// period).
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Queue limits and the lifetime of idempotency keys.
#[derive(Debug, Clone)]
pub struct RunsOptions {
    pub max_queued_per_tenant: u64,
    pub max_queue_depth: i64,
    /// How long an idempotency key (an API caller's, or a webhook delivery id) holds the run
    /// it made; after it, the same key makes a new run. Also how long a tenant without runs
    /// keeps its claim-rotation row.
    pub idempotency_ttl: Duration,
}

impl Default for RunsOptions {
    fn default() -> Self {
        Self {
            max_queued_per_tenant: DEFAULT_MAX_QUEUED_PER_TENANT,
            max_queue_depth: DEFAULT_MAX_QUEUE_DEPTH,
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
        }
    }
}

/// Workflows and runs as the API sees them. Cheap to clone.
#[derive(Clone)]
pub struct Runs {
    pipeline: Pipeline,
    options: RunsOptions,
    depth: Arc<DepthCache>,
    hook_counters: Arc<triggers::HookCounters>,
    hook_rates: Arc<rate::RateLimits>,
    /// Each webhook trigger with its workflow, by trigger id: what every delivery reads.
    hook_targets: Arc<triggers::HookTargets>,
}

#[derive(Default)]
struct DepthCache {
    read_at_ms: AtomicI64,
    depth: AtomicI64,
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runs")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A workflow as saved: the record and its parsed definition.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub record: WorkflowRecord,
    pub spec: WorkflowSpec,
}

impl Workflow {
    fn from_record(record: WorkflowRecord) -> Result<Workflow, RunsError> {
        let spec = serde_json::from_str(&record.definition).map_err(|e| {
            tracing::error!(workflow = %record.id, error = %e, "a stored workflow definition does not parse");
            RunsError::Core(airlock_core::CoreError::Internal)
        })?;
        Ok(Workflow { record, spec })
    }
}

impl Runs {
    pub fn new(pipeline: Pipeline, options: RunsOptions) -> Runs {
        Runs {
            options,
            depth: Arc::default(),
            hook_counters: Arc::default(),
            hook_rates: Arc::default(),
            hook_targets: Arc::new(triggers::hook_targets(pipeline.clock())),
            pipeline,
        }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Checks a definition: its own rules (422), then that every step's connector (or
    /// pinned version) and connection exist in the tenant (404, as for any other request
    /// naming a resource the tenant lacks), that the action exists (422), and that a step's connection
    /// belongs to its connector. A step without a connection runs without a credential, as
    /// an invocation without one does.
    pub async fn check(&self, tenant: &TenantId, spec: &WorkflowSpec) -> Result<(), RunsError> {
        spec.validate()?;
        for (path, step) in spec.actions() {
            let at = |field: &str| format!("{path}.{field}");
            let invalid = |field: &str, detail: String| RunsError::Invalid {
                field: at(field),
                detail,
            };
            let missing = |field: &str, detail: String| RunsError::Missing {
                field: at(field),
                detail,
            };
            let record = match self
                .pipeline
                .connector(tenant.as_str(), &step.connector, step.version.as_deref())
                .await
            {
                Ok(record) => record,
                Err(airlock_core::CoreError::NotFound { .. }) => {
                    let field = if step.version.is_some() {
                        "version"
                    } else {
                        "connector"
                    };
                    return Err(missing(
                        field,
                        format!(
                            "the tenant has no connector `{}` at that version",
                            step.connector
                        ),
                    ));
                }
                Err(other) => return Err(other.into()),
            };
            if !record
                .manifest
                .actions
                .iter()
                .any(|a| a.name == step.action)
            {
                return Err(invalid(
                    "action",
                    format!(
                        "connector `{}` has no action `{}`",
                        step.connector, step.action
                    ),
                ));
            }
            if let Some(id) = &step.connection {
                let connection = match self.pipeline.connection(tenant.as_str(), id).await {
                    Ok(connection) => connection,
                    Err(airlock_core::CoreError::NotFound { .. }) => {
                        return Err(missing(
                            "connection",
                            "the tenant has no such connection".to_owned(),
                        ));
                    }
                    Err(other) => return Err(other.into()),
                };
                if connection.connector != step.connector {
                    return Err(invalid(
                        "connection",
                        format!(
                            "connection `{id}` belongs to connector `{}`",
                            connection.connector
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub async fn create_workflow(
        &self,
        tenant: &TenantId,
        name: &str,
        spec: &WorkflowSpec,
    ) -> Result<Workflow, RunsError> {
        self.check(tenant, spec).await?;
        let quota = self.pipeline.quota(tenant.as_str()).await?;
        let id = format!("wf_{}", uuid::Uuid::new_v4().simple());
        let record = self
            .pipeline
            .store()
            .create_workflow(
                tenant.as_str(),
                &id,
                name,
                &definition_text(spec)?,
                quota.max_workflows,
            )
            .await
            .map_err(workflow_write_error(Some(name)))?;
        Ok(Workflow {
            record,
            spec: spec.clone(),
        })
    }

    pub async fn put_workflow(
        &self,
        tenant: &TenantId,
        id: &str,
        name: Option<&str>,
        spec: &WorkflowSpec,
    ) -> Result<Workflow, RunsError> {
        self.check(tenant, spec).await?;
        let record = self
            .pipeline
            .store()
            .put_workflow_version(tenant.as_str(), id, name, &definition_text(spec)?)
            .await
            .map_err(workflow_write_error(name))?;
        // Deliveries here start the new version from now on.
        self.hook_targets.invalidate_all();
        Ok(Workflow {
            record,
            spec: spec.clone(),
        })
    }

    /// Deletes a workflow and its triggers: new runs of it are refused, and its webhooks
    /// answer 404 (here at once, in other processes within the cache's TTL).
    pub async fn delete_workflow(&self, tenant: &TenantId, id: &str) -> Result<(), RunsError> {
        let deleted = self
            .pipeline
            .store()
            .delete_workflow(tenant.as_str(), id)
            .await
            .map_err(RunsError::or_not_found("workflow"));
        self.hook_targets.invalidate_all();
        deleted
    }

    pub async fn workflow(
        &self,
        tenant: &TenantId,
        id: &str,
        version: Option<i64>,
    ) -> Result<Workflow, RunsError> {
        let record = self
            .pipeline
            .store()
            .workflow(tenant.as_str(), id, version)
            .await
            .map_err(RunsError::or_not_found("workflow"))?;
        Workflow::from_record(record)
    }

    pub async fn list_workflows(&self, tenant: &TenantId) -> Result<Vec<Workflow>, RunsError> {
        let records = self
            .pipeline
            .store()
            .list_workflows(tenant.as_str())
            .await?;
        records.into_iter().map(Workflow::from_record).collect()
    }

    /// Creates a run of the workflow's current version, or returns the run an earlier
    /// request with the same `idempotency_key` created (`created: false`), without charging
    /// it again. Refusals, in order: unknown workflow (404), queue past the operator's
    /// depth (503), too many of the tenant's runs waiting (429), hourly runs used (429).
    pub async fn enqueue(
        &self,
        tenant: &TenantId,
        workflow_id: &str,
        input: &Value,
        idempotency_key: Option<&str>,
        trace: Option<&TraceContext>,
    ) -> Result<(RunRecord, bool), RunsError> {
        let t = tenant.as_str();
        let workflow = self
            .pipeline
            .store()
            .workflow(t, workflow_id, None)
            .await
            .map_err(RunsError::or_not_found("workflow"))?;
        if let Some(key) = idempotency_key {
            // Triggers' keys are theirs: a caller taking `cron:<trigger>:<tick>` ahead of the
            // scheduler would have that tick refused.
            if RESERVED_KEY_PREFIXES.iter().any(|p| key.starts_with(p)) {
                check_idempotency_key(key)?;
                return Err(RunsError::Invalid {
                    field: "Idempotency-Key".into(),
                    detail: "keys starting with `cron:`, `hook:` or `failure:` are reserved for triggers and failure handlers"
                        .into(),
                });
            }
        }
        let request = Keyed::api(&workflow.id, input);
        if let Some(key) = idempotency_key
            && let Some(existing) = self.existing_run(tenant, key, &request).await?
        {
            return Ok((existing, false));
        }
        self.create_run(
            tenant,
            &workflow,
            input,
            idempotency_key,
            &request,
            Origin {
                trigger_id: None,
                trace,
            },
        )
        .await
    }

    /// The live run created with idempotency key `key`, once the key is checked: `None` when
    /// no run holds it or the one holding it is older than the keys' lifetime (the creation
    /// that follows releases it). A run made by another request is refused: the key was
    /// reused ([`Keyed::reused`]).
    pub(crate) async fn existing_run(
        &self,
        tenant: &TenantId,
        key: &str,
        request: &Keyed,
    ) -> Result<Option<RunRecord>, RunsError> {
        check_idempotency_key(key)?;
        let found = self
            .pipeline
            .store()
            .run_by_key(tenant.as_str(), key)
            .await?;
        match found {
            Some(run) if self.expired(&run) => Ok(None),
            Some(run) => request.same(run).map(Some),
            None => Ok(None),
        }
    }

    /// Whether `run` was created longer ago than an idempotency key lives.
    fn expired(&self, run: &RunRecord) -> bool {
        let ttl = i64::try_from(self.options.idempotency_ttl.as_millis()).unwrap_or(i64::MAX);
        run.created_at < airlock_store::now_ms().saturating_sub(ttl)
    }

    /// Creates a run of `workflow` (its current version), for the API or a trigger, once no
    /// run holds `idempotency_key`. Refusals: queue past the operator's depth (503), too many
    /// of the tenant's runs waiting (429), hourly runs used (429). A run holding the key
    /// (a concurrent request's, or an earlier one's) answers `created: false`, before any
    /// limit but the depth, if it was made by the same `request`; one made by another is
    /// refused ([`Keyed::reused`]), and one older than the keys' lifetime loses the key to
    /// this request.
    pub(crate) async fn create_run(
        &self,
        tenant: &TenantId,
        workflow: &WorkflowRecord,
        input: &Value,
        idempotency_key: Option<&str>,
        request: &Keyed,
        origin: Origin<'_>,
    ) -> Result<(RunRecord, bool), RunsError> {
        let Origin { trigger_id, trace } = origin;
        let t = tenant.as_str();
        let depth = self.queue_depth().await?;
        if depth >= self.options.max_queue_depth {
            return Err(RunsError::QueueFull {
                depth,
                retry_after_s: 5,
            });
        }
        let quota = self.pipeline.quota(t).await?;
        if quota.suspended {
            return Err(RunsError::TenantSuspended(t.to_owned()));
        }
        let store = self.pipeline.store();
        let id = format!("run_{}", uuid::Uuid::new_v4().simple());
        // The run's steps, wherever and whenever they run, are this span's children.
        let spans = self.metrics().spans();
        let mut span = match trace {
            Some(parent) => spans.start("run.enqueue", SpanKind::Producer, parent),
            None => spans.start_entry("run.enqueue", SpanKind::Producer, None),
        };
        span.set("airlock.tenant", t);
        span.set("airlock.workflow", workflow.id.as_str());
        span.set("airlock.run", id.as_str());
        let new = NewRun {
            id,
            workflow_id: workflow.id.clone(),
            workflow_version: workflow.version,
            input: input.to_string(),
            idempotency_key: idempotency_key.map(str::to_owned),
            request_hash: idempotency_key.map(|_| request.hash.clone()),
            trigger_id: trigger_id.map(str::to_owned),
            trace_id: Some(span.context().trace_id.to_string()),
            trace_parent: Some(span.context().stored_parent()),
            // Counted in the insert's transaction: one commit per run.
            runs_per_hour: Some(quota.runs_per_hour),
            max_queued: self.options.max_queued_per_tenant,
        };
        let trigger = if trigger_id.is_some() {
            "webhook"
        } else {
            "api"
        };
        let created = |run| {
            self.metrics().run_created(trigger);
            Ok((run, true))
        };
        match store.create_run(t, new.clone()).await? {
            Enqueued::Created(run) => created(run),
            // The key is held by a run past the keys' lifetime that the periodic expiry has
            // not cleared yet: release it and create once more (a concurrent twin doing the
            // same finds the new run).
            Enqueued::Existing(run) if self.expired(&run) => {
                if let Some(key) = idempotency_key {
                    store.release_key(t, key, &run.id).await?;
                }
                match store.create_run(t, new).await? {
                    Enqueued::Created(run) => created(run),
                    Enqueued::Existing(run) => request.same(run).map(|run| (run, false)),
                }
            }
            // A concurrent request with the same key created it first (and was charged).
            Enqueued::Existing(run) => request.same(run).map(|run| (run, false)),
        }
    }

    pub(crate) fn metrics(&self) -> &airlock_telemetry::Metrics {
        self.pipeline.runtime().metrics()
    }

    /// Runs waiting across all tenants, read at most once a second.
    pub async fn queue_depth(&self) -> Result<i64, RunsError> {
        let now = airlock_store::now_ms();
        if now - self.depth.read_at_ms.load(Ordering::Relaxed) < DEPTH_TTL_MS {
            return Ok(self.depth.depth.load(Ordering::Relaxed));
        }
        let depth = self.pipeline.store().queue_depth().await?;
        self.depth.depth.store(depth, Ordering::Relaxed);
        self.depth.read_at_ms.store(now, Ordering::Relaxed);
        Ok(depth)
    }

    /// Whether the queue is under the operator's depth threshold (for `/readyz`).
    pub async fn queue_ready(&self) -> Result<i64, RunsError> {
        let depth = self.queue_depth().await?;
        if depth >= self.options.max_queue_depth {
            return Err(RunsError::QueueFull {
                depth,
                retry_after_s: 5,
            });
        }
        Ok(depth)
    }

    /// Cancels a run (see [`airlock_store::Store::cancel_run`]), audited as `actor`.
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        run_id: &str,
        actor: &str,
    ) -> Result<Cancelled, RunsError> {
        let cancelled = self
            .pipeline
            .store()
            .cancel_run(tenant.as_str(), run_id, actor)
            .await
            .map_err(RunsError::or_not_found("run"))?;
        match cancelled {
            Cancelled::AlreadyEnded(state) => Err(RunsError::state("cancel", state)),
            other => Ok(other),
        }
    }

    /// Replays a dead or cancelled run from step `from_step` (an id; default: the step that
    /// failed), audited as `actor`. With [`ReplayVersion::Current`] the run goes on with its
    /// workflow's current version, whose steps before the one it starts from must be the
    /// journaled ones (same ids, same order): their outputs are kept.
    pub async fn replay(
        &self,
        tenant: &TenantId,
        run_id: &str,
        from_step: Option<&str>,
        from_item: Option<u32>,
        version: ReplayVersion,
        actor: &str,
    ) -> Result<RunRecord, RunsError> {
        let store = self.pipeline.store();
        let t = tenant.as_str();
        let run = store
            .run(t, run_id)
            .await
            .map_err(RunsError::or_not_found("run"))?;
        let (version, definition) = match version {
            ReplayVersion::AsRan => (
                None,
                store
                    .workflow_definition(t, &run.workflow_id, run.workflow_version)
                    .await?,
            ),
            ReplayVersion::Current => {
                let current = store
                    .workflow(t, &run.workflow_id, None)
                    .await
                    .map_err(|e| match e {
                        airlock_store::StoreError::NotFound => RunsError::Invalid {
                            field: "workflow_version".into(),
                            detail: "the run's workflow was deleted: it has no current version; replay it as it ran".into(),
                        },
                        other => other.into(),
                    })?;
                (Some(current.version), current.definition)
            }
        };
        let spec: WorkflowSpec = serde_json::from_str(&definition)
            .map_err(|_| RunsError::Core(airlock_core::CoreError::Internal))?;
        // A failure-handler run replays its `on_failure` steps.
        let lower = |spec: &WorkflowSpec| match run.handles {
            Some(_) => airlock_model::Program::handler(spec),
            None => airlock_model::Program::new(spec),
        };
        let program = lower(&spec);
        let kept = store.run_steps(t, run_id).await?;
        let from = match from_step {
            None => None,
            Some(step) => {
                let index = program.position(step).ok_or_else(|| RunsError::Invalid {
                    field: "from_step".into(),
                    detail: format!("the workflow version it would run has no step `{step}`"),
                })?;
                Some(i64::try_from(index).unwrap_or(i64::MAX))
            }
        };
        let items = kept_items(
            &program,
            from_step,
            from.unwrap_or(run.next_step),
            from_item,
        )?;
        // A replay starts on the path the run took: following the journal's decisions in
        // the program that will run must lead to the step it starts at. A step of a branch
        // the journaled `switch` did not take (or, in another version, a step now where
        // the run never went) would run what those decisions ruled out.
        let start = from.unwrap_or(run.next_step);
        let visited: Vec<(usize, Option<String>)> = kept
            .iter()
            .filter(|step| step.index < start.min(run.next_step))
            .map(|step| {
                let branch = step
                    .output
                    .as_deref()
                    .filter(|_| step.status == "succeeded")
                    .and_then(|output| serde_json::from_str::<serde_json::Value>(output).ok())
                    .and_then(|output| output.get("branch")?.as_str().map(str::to_owned));
                (usize::try_from(step.index).unwrap_or(usize::MAX), branch)
            })
            .collect();
        let visited: Vec<(usize, Option<&str>)> = visited
            .iter()
            .map(|(index, branch)| (*index, branch.as_deref()))
            .collect();
        if start <= run.next_step
            && !program.leads_to(&visited, usize::try_from(start).unwrap_or(usize::MAX))
        {
            let (field, detail) = match from_step {
                Some(step) => (
                    "from_step",
                    format!(
                        "the run never reached step `{step}` (a branch it did not take); replay from a step it reached"
                    ),
                ),
                None => (
                    "workflow_version",
                    "the current version's steps do not lead where the run stopped; replay from an earlier step with `from_step`".to_owned(),
                ),
            };
            return Err(RunsError::Invalid {
                field: field.into(),
                detail,
            });
        }
        // With another version, the store is told where the replay starts, so the steps it
        // keeps are the ones checked here even if the run moved on in between.
        let mut from = from;
        if version.is_some() {
            let start = from.unwrap_or(run.next_step);
            from = Some(start);
            let reused = kept.iter().filter(|step| step.index < start);
            for step in reused {
                let same = usize::try_from(step.index)
                    .ok()
                    .and_then(|i| program.nodes.get(i))
                    .is_some_and(|node| node.id == step.step_id);
                if !same {
                    return Err(RunsError::Invalid {
                        field: "workflow_version".into(),
                        detail: format!(
                            "the current version's steps before the one the replay starts from are not the run's (step {} was `{}`); replay from an earlier step with `from_step`",
                            step.index, step.step_id
                        ),
                    });
                }
            }
            if usize::try_from(start).map_or(true, |start| start >= program.len()) {
                return Err(RunsError::Invalid {
                    field: "workflow_version".into(),
                    detail: "the current version has no step where the replay would start; replay from an earlier step with `from_step`".into(),
                });
            }
        }
        if version.is_some() {
            self.check_kept_items(t, run_id, &program, start, items)
                .await?;
        }
        // A replay runs the workflow again: it is a run to the queue and to the hour's
        // quota, or a loop of replays would be runs for nothing.
        let depth = self.queue_depth().await?;
        if depth >= self.options.max_queue_depth {
            return Err(RunsError::QueueFull {
                depth,
                retry_after_s: 5,
            });
        }
        // Counted with the replay, in its transaction, as a new run is with its insert.
        let quota = self.pipeline.quota(t).await?;
        let admit = ReplayAdmission {
            runs_per_hour: quota.runs_per_hour,
            max_queued: self.options.max_queued_per_tenant,
        };
        match store
            .replay_run(t, run_id, from, items, version, admit, actor)
            .await?
        {
            Ok(run) => {
                self.metrics().run_created("replay");
                tracing::info!(tenant = t, run = %run.id, actor, from_step = ?from, "run replayed");
                Ok(run)
            }
            Err(ReplayRefusal::State(state)) => Err(RunsError::state("replay", state)),
            Err(ReplayRefusal::NotReached { next_step }) => Err(RunsError::Invalid {
                field: "from_step".into(),
                detail: format!(
                    "the run never finished the steps before it (it stopped at step {next_step}); replay from an earlier step"
                ),
            }),
        }
    }
}

/// Which of a `for_each`'s journaled iterations a replay starting at `start` keeps: all of
/// them when the replay goes on where the run stopped (only the items not done run), none
/// when it starts from the `for_each` itself, and from a body step (`each.send`) those
/// before it; `from_item` narrows a replay from the `for_each` or a body step to one item.
fn kept_items(
    program: &airlock_model::Program,
    from_step: Option<&str>,
    start: i64,
    from_item: Option<u32>,
) -> Result<KeptItems, RunsError> {
    let start = usize::try_from(start).unwrap_or(usize::MAX);
    let item = from_item.map(i64::from);
    let kept = match from_step {
        Some(step) => match program.body_position(step) {
            Some((_, body_index)) => KeptItems::From {
                body_index: i64::try_from(body_index).unwrap_or(i64::MAX),
                item,
            },
            None if program.body(start).is_some() && item.is_some() => KeptItems::From {
                body_index: 0,
                item,
            },
            None => KeptItems::None,
        },
        None if program.body(start).is_some() => match item {
            Some(_) => KeptItems::From {
                body_index: 0,
                item,
            },
            None => KeptItems::All,
        },
        None => KeptItems::None,
    };
    if item.is_some() && program.body(start).is_none() {
        return Err(RunsError::Invalid {
            field: "from_item".into(),
            detail: "names an item of a for_each: replay from a for_each or one of its body \
                     steps"
                .into(),
        });
    }
    Ok(kept)
}

impl Runs {
    /// With another workflow version, the iterations a replay keeps must be of the same body
    /// steps in it: an item's journaled outputs stand for those steps. Those are every
    /// iteration of a `for_each` before the start, and those `items` keeps of one at it.
    async fn check_kept_items(
        &self,
        tenant: &str,
        run_id: &str,
        program: &airlock_model::Program,
        start: i64,
        items: KeptItems,
    ) -> Result<(), RunsError> {
        let journaled = self
            .pipeline
            .store()
            .run_items(tenant, run_id, None, None)
            .await?;
        for (step_index, row) in journaled {
            let kept = match step_index.cmp(&start) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => match items {
                    KeptItems::None => false,
                    KeptItems::All => true,
                    KeptItems::From { body_index, item } => {
                        row.body_index < body_index || item.is_some_and(|i| i != row.item)
                    }
                },
            };
            let same = usize::try_from(step_index)
                .ok()
                .and_then(|index| program.body(index))
                .zip(usize::try_from(row.body_index).ok())
                .and_then(|(body, i)| body.get(i))
                .is_some_and(|step| step.id == row.step_id);
            if kept && !same {
                return Err(RunsError::Invalid {
                    field: "workflow_version".into(),
                    detail: format!(
                        "the current version's for_each body is not the one its kept iterations ran (`{}` of item {}); replay from the for_each itself to run every item again",
                        row.step_id, row.item
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Which workflow version a replayed run goes on with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplayVersion {
    /// The version it ran with (a replay after an upstream outage, or a fixed credential).
    #[default]
    AsRan,
    /// The workflow's current version (a replay after fixing the workflow).
    Current,
}

/// Where a new run comes from: the trigger that made it, and the trace it joins (a new one
/// when `None`).
pub(crate) struct Origin<'a> {
    pub trigger_id: Option<&'a str>,
    pub trace: Option<&'a TraceContext>,
}

/// A store error of saving a workflow: a taken name is a conflict naming it.
fn workflow_write_error(name: Option<&str>) -> impl Fn(airlock_store::StoreError) -> RunsError {
    move |error| match error {
        airlock_store::StoreError::Conflict => RunsError::Conflict(format!(
            "a workflow named `{}` exists",
            name.unwrap_or_default()
        )),
        other => RunsError::or_not_found("workflow")(other),
    }
}

fn definition_text(spec: &WorkflowSpec) -> Result<String, RunsError> {
    serde_json::to_string(spec).map_err(|_| RunsError::Core(airlock_core::CoreError::Internal))
}

/// What an idempotency key stands for: a fingerprint of the request that used it, and what
/// to answer when another request reuses it.
pub(crate) struct Keyed {
    /// Hex SHA-256, stored with the run (`runs.request_hash`).
    hash: String,
    /// Whether the key is a webhook delivery id (refused with 409) or an API caller's
    /// `Idempotency-Key` (422).
    delivery: bool,
}

impl Keyed {
    /// `POST /v1/workflows/{id}/runs`: the workflow and the input, its object members in
    /// sorted order (the same JSON however its members were ordered or spaced).
    pub(crate) fn api(workflow_id: &str, input: &Value) -> Keyed {
        let mut canonical = String::new();
        canonical_json(input, &mut canonical);
        Keyed {
            hash: fingerprint(&[b"api", workflow_id.as_bytes(), canonical.as_bytes()]),
            delivery: false,
        }
    }

    /// A webhook delivery: its body, byte for byte (the trigger, and so the workflow, is in
    /// the key already; headers and the receive time differ between redeliveries).
    pub(crate) fn delivery(body: &[u8]) -> Keyed {
        Keyed {
            hash: fingerprint(&[b"hook", body]),
            delivery: true,
        }
    }

    /// `run` if this request made it (or it predates fingerprints), else the refusal of a
    /// reused key.
    fn same(&self, run: RunRecord) -> Result<RunRecord, RunsError> {
        match &run.request_hash {
            Some(hash) if *hash != self.hash => Err(self.reused()),
            _ => Ok(run),
        }
    }

    /// The IETF `Idempotency-Key` draft: "a request with the same key but a different
    /// payload" is 422. A webhook delivery id reused with another body is a 409: the id is
    /// taken (a sender's bug, or a replay with the body changed), and nothing the sender
    /// can fix by retrying the same bytes.
    fn reused(&self) -> RunsError {
        if self.delivery {
            RunsError::Conflict(
                "this delivery id was already received with another body; a redelivery must \
                 carry the same body, and a new event needs a new id"
                    .into(),
            )
        } else {
            RunsError::Invalid {
                field: "Idempotency-Key".into(),
                detail: "this Idempotency-Key was already used with another request (another \
                         workflow or another body); use a new key for a new request"
                    .into(),
            }
        }
    }
}

/// Hex SHA-256 of `parts`, each prefixed by its length so no two lists of parts collide.
fn fingerprint(parts: &[&[u8]]) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// `value` as JSON with object members sorted by key and no whitespace, whatever order the
/// map type keeps them in.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(member, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn check_idempotency_key(key: &str) -> Result<(), RunsError> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(RunsError::Invalid {
            field: "Idempotency-Key".into(),
            detail: format!("must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        });
    }
    Ok(())
}
