//! Durable runs: the run queue, its leases and fencing, the step journal, cancel and replay.
//!
//! A run is claimed by one worker at a time under a lease (`lease_until`, renewed by
//! heartbeats) and a fencing token (`lease_epoch`, incremented by every claim). Every write a
//! worker makes about a run names the epoch it claimed with and changes nothing unless the
//! run is still `running` under that epoch: a worker whose lease expired and was claimed again
//! elsewhere writes nothing, whatever it thinks. Expired leases are re-queued by [`Store::reap`].
//!
//! Claiming is fair across tenants: tenants take turns (the one claimed from longest ago
//! first, `run_tenants.last_turn`), and a tenant's runs in `running` never exceed its
//! `max_concurrent_runs`, across every process: the count and the claim happen under a lock
//! on the tenant's `run_tenants` row (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so claimers
//! skip a tenant another is claiming for; on SQLite the one writer serializes claims).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{DbKind, Store, StoreError, findable, now_ms};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Queued,
    Running,
    /// Waiting for its next attempt (`run_at`).
    Retrying,
    Succeeded,
    /// The dead-letter state: out of attempts, or failed in a way a retry cannot fix.
    Dead,
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 6] = [
        RunState::Queued,
        RunState::Running,
        RunState::Retrying,
        RunState::Succeeded,
        RunState::Dead,
        RunState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Retrying => "retrying",
            RunState::Succeeded => "succeeded",
            RunState::Dead => "dead",
            RunState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The `state` column of `row`.
    fn read(row: &AnyRow) -> Result<RunState, StoreError> {
        let state: String = row.try_get("state")?;
        RunState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("run state `{state}`")))
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Dead | RunState::Cancelled
        )
    }
}

/// What one step (or a whole run, summed) cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub fuel_used: i64,
    pub duration_us: i64,
    pub peak_memory_bytes: i64,
    pub outbound_requests: i64,
    pub outbound_bytes: i64,
}

impl Cost {
    /// Both costs together: counts and times add up, the memory peak is the higher one.
    pub fn plus(self, other: Cost) -> Cost {
        Cost {
            fuel_used: self.fuel_used.saturating_add(other.fuel_used),
            duration_us: self.duration_us.saturating_add(other.duration_us),
            peak_memory_bytes: self.peak_memory_bytes.max(other.peak_memory_bytes),
            outbound_requests: self
                .outbound_requests
                .saturating_add(other.outbound_requests),
            outbound_bytes: self.outbound_bytes.saturating_add(other.outbound_bytes),
        }
    }

    fn read(row: &AnyRow) -> Result<Cost, StoreError> {
        Ok(Cost {
            fuel_used: row.try_get("fuel_used")?,
            duration_us: row.try_get("duration_us")?,
            peak_memory_bytes: row.try_get("peak_memory_bytes")?,
            outbound_requests: row.try_get("outbound_requests")?,
            outbound_bytes: row.try_get("outbound_bytes")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: String,
    pub workflow_id: String,
    pub workflow_version: i64,
    pub state: RunState,
    /// The trigger payload, as JSON text.
    pub input: String,
    pub idempotency_key: Option<String>,
    /// The fingerprint of the request that created it (see [`NewRun::request_hash`]).
    pub request_hash: Option<String>,
    /// The trigger that created it, if one did.
    pub trigger_id: Option<String>,
    /// The W3C trace it belongs to (32 hex digits), sent upstream by every step.
    pub trace_id: Option<String>,
    /// The span its steps are children of, and whether the trace is sampled:
    /// `<16 hex digits>-<flags>` (`None` for runs made before it was kept).
    pub trace_parent: Option<String>,
    /// The first step not yet journaled as succeeded.
    pub next_step: i64,
    /// Failed attempts of `next_step` so far.
    pub attempt: i64,
    /// When a queued or retrying run may be claimed.
    pub run_at: i64,
    pub lease_epoch: i64,
    pub cancel_requested: bool,
    pub output: Option<String>,
    /// Why the run is dead (JSON text).
    pub error: Option<String>,
    pub cost: Cost,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    /// A failure-handler run: the dead run whose workflow's `on_failure` steps it runs.
    pub handles: Option<String>,
}

pub(crate) const RUN_COLUMNS: &str = "id, workflow_id, workflow_version, state, input, idempotency_key, \
    trigger_id, next_step, attempt, run_at, lease_epoch, cancel_requested, output, error, fuel_used, \
    duration_us, peak_memory_bytes, outbound_requests, outbound_bytes, created_at, started_at, \
    finished_at, updated_at, request_hash, trace_id, trace_parent, handles";

pub(crate) fn run(row: &AnyRow) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        id: row.try_get("id")?,
        workflow_id: row.try_get("workflow_id")?,
        workflow_version: row.try_get("workflow_version")?,
        state: RunState::read(row)?,
        input: row.try_get("input")?,
        idempotency_key: row.try_get("idempotency_key")?,
        request_hash: row.try_get("request_hash")?,
        trace_id: row.try_get("trace_id")?,
        trace_parent: row.try_get("trace_parent")?,
        trigger_id: row.try_get("trigger_id")?,
        next_step: row.try_get("next_step")?,
        attempt: row.try_get("attempt")?,
        run_at: row.try_get("run_at")?,
        lease_epoch: row.try_get("lease_epoch")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        cost: Cost::read(row)?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        updated_at: row.try_get("updated_at")?,
        handles: row.try_get("handles")?,
    })
}

/// One journaled step: its output once it succeeded, or its last failure.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub index: i64,
    pub step_id: String,
    /// `succeeded`, `failed` or `skipped`.
    pub status: String,
    pub attempts: i64,
    pub output: Option<String>,
    pub error: Option<String>,
    /// The last attempt's log lines (JSON text).
    pub logs: String,
    pub cost: Cost,
    pub finished_at: i64,
}

fn step(row: &AnyRow) -> Result<StepRecord, StoreError> {
    Ok(StepRecord {
        index: row.try_get("step_index")?,
        step_id: row.try_get("step_id")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        logs: row.try_get("logs")?,
        cost: Cost::read(row)?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub workflow_id: String,
    pub workflow_version: i64,
    pub input: String,
    pub idempotency_key: Option<String>,
    /// A fingerprint of the request (hex SHA-256 of what makes it this request: the
    /// workflow and the input, or a webhook delivery's body), kept with the run so a later
    /// request with the same key can be told apart from a repeat.
    pub request_hash: Option<String>,
    /// The trigger that created it, if one did.
    pub trigger_id: Option<String>,
    /// The W3C trace it belongs to (32 hex digits).
    pub trace_id: Option<String>,
    /// The span its steps are children of: see [`RunRecord::trace_parent`].
    pub trace_parent: Option<String>,
    /// Count the run against the tenant's hourly runs, at most this many, in the insert's
    /// own transaction ([`StoreError::OverQuota`] past it): one durable commit per run
    /// instead of a charge and an insert in series. `None`: charged elsewhere (cron ticks
    /// are charged before their claim), or not at all.
    pub runs_per_hour: Option<u32>,
    /// Refuse with [`StoreError::LimitReached`] when the tenant has this many runs waiting.
    pub max_queued: u64,
}

/// Whether [`Store::create_run`] created the run or found one with the same key.
#[derive(Debug, Clone)]
pub enum Enqueued {
    Created(RunRecord),
    Existing(RunRecord),
}

/// A claimed run's fencing token: every worker write names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub tenant_id: String,
    pub run_id: String,
    pub epoch: i64,
    /// How long the lease holds past a renewal: every fenced write extends it by this much.
    pub lease_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Claimed {
    pub lease: Lease,
    pub run: RunRecord,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStatus {
    Held,
    /// Held, and someone asked for the run to be cancelled.
    CancelRequested,
    /// Expired and re-queued, claimed by another worker, cancelled or finished: stop, write
    /// nothing.
    Lost,
}

/// A step attempt's result, as the worker journals it.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub index: i64,
    /// The step the run goes on at when this one is journaled (not always `index + 1`: a
    /// `switch` jumps to its branch, a branch's last step past the switch).
    pub next: i64,
    pub step_id: String,
    /// The step's `when` did not hold: journaled as `skipped`, with no output.
    pub skipped: bool,
    pub output: Option<String>,
    pub error: Option<String>,
    pub logs: String,
    pub cost: Cost,
}

/// One finished step of one `for_each` iteration, as the worker journals it.
#[derive(Debug, Clone)]
pub struct ItemResult {
    /// The `for_each` step's index.
    pub index: i64,
    pub item: i64,
    pub body_index: i64,
    /// The body step's full id (`each.send`).
    pub step_id: String,
    pub skipped: bool,
    pub output: Option<String>,
    pub logs: String,
    pub cost: Cost,
}

/// A journaled iteration step, as [`Store::run_items`] reads it.
#[derive(Debug, Clone)]
pub struct ItemRecord {
    pub item: i64,
    pub body_index: i64,
    pub step_id: String,
    pub status: String,
    pub output: Option<String>,
    pub finished_at: i64,
}

/// The tenant's limits a replay is held to, as a new run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayAdmission {
    pub runs_per_hour: u32,
    pub max_queued: u64,
}

/// Which journaled iterations of a `for_each` a replay starting at it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptItems {
    /// None: every item runs again (a replay from the `for_each` itself).
    None,
    /// All: only the items not done run (a replay of a run that stopped inside it).
    All,
    /// The body steps before `body_index` of every item, or with `item` of that one item
    /// only (the others keep all theirs): the rest runs again.
    From { body_index: i64, item: Option<i64> },
}

impl KeptItems {
    /// For the audit record.
    fn describe(self) -> serde_json::Value {
        match self {
            KeptItems::None => serde_json::json!("rerun"),
            KeptItems::All => serde_json::json!("kept"),
            KeptItems::From { body_index, item } => {
                serde_json::json!({"from_body_step": body_index, "item": item})
            }
        }
    }
}

/// What follows a failed step attempt.
#[derive(Debug, Clone)]
pub enum AfterFailure {
    /// Attempt again at `run_at`.
    Retry { run_at: i64 },
    /// Dead-letter the run with `error` (JSON text), and in the same transaction queue
    /// `handler` (the workflow's `on_failure` steps) and, when the tenant has a dead-letter
    /// webhook, a notice whose event data is `notice` (JSON text).
    Dead {
        error: String,
        handler: Option<FailureHandler>,
        notice: String,
    },
}

/// The run a dead run's `on_failure` steps run in. It takes the dead run's workflow version
/// and trace; its key, `failure:<run>:<lease epoch>`, makes one per death.
#[derive(Debug, Clone)]
pub struct FailureHandler {
    pub id: String,
    /// Its trigger payload (JSON text): the dead run's id, error, failed step and trigger.
    pub input: String,
}

/// How a worker ends its hold on a run without a step failure.
#[derive(Debug, Clone)]
pub enum Finish {
    Succeeded {
        output: String,
    },
    Cancelled,
    /// Shutting down: back to the queue, claimable at once by any worker.
    Released,
    /// Not the run's fault (the database failed while loading or journaling it): back to the
    /// queue, claimable again after `delay_ms`, no attempt counted.
    Deferred {
        delay_ms: i64,
    },
}

/// What [`Store::cancel_run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It was waiting: it is cancelled now.
    Now,
    /// It is running: its worker is told at once (in this process, and on PostgreSQL in
    /// every other through `NOTIFY`), stops the guest and cancels the run.
    Requested,
    /// It had already ended in this state.
    AlreadyEnded(RunState),
}

/// Why [`Store::replay_run`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayRefusal {
    /// Only dead and cancelled runs are replayed.
    State(RunState),
    /// The run never reached that step: steps before it have no journaled output.
    NotReached { next_step: i64 },
}

/// Filters of [`Store::list_runs`]; the cursor is the last row of the previous page.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub workflow_id: Option<String>,
    pub state: Option<RunState>,
    pub created_from: Option<i64>,
    pub created_before: Option<i64>,
    /// `(created_at, id)` of the last run of the previous page (newest first).
    pub after: Option<(i64, String)>,
    pub limit: i64,
}

/// An append-only record of who replayed or cancelled what.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub run_id: String,
    pub detail: String,
}

/// One tenant's usage on one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayUsage {
    pub day: i64,
    pub runs: i64,
    pub steps: i64,
    pub fuel_used: i64,
    pub duration_us: i64,
    pub outbound_requests: i64,
    pub outbound_bytes: i64,
}

pub(crate) const DAY_MS: i64 = 86_400_000;
pub(crate) const WAITING: &str = "state IN ('queued', 'retrying')";

pub(crate) type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

impl Store {
    /// Creates a queued run, or returns the run created before with the same idempotency
    /// key (before any limit is applied: a retried request always finds its run). A tenant
    /// with `max_queued` runs waiting is refused ([`StoreError::LimitReached`]), and one
    /// that used its hour ([`StoreError::OverQuota`]). Answered once durable; on SQLite,
    /// group-committed with the runs created at the same moment (see `enqueue/`).
    pub async fn create_run(&self, tenant_id: &str, new: NewRun) -> Result<Enqueued, StoreError> {
        self.enqueuer.create(tenant_id, new).await
    }

    /// The run created with idempotency key `key`, if any. Read on the shared pool: a run
    /// is answered only once committed, so a reader after that answer sees it, and the
    /// check does not queue behind SQLite's one writer.
    pub async fn run_by_key(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        run_by_key_on(&self.pool, tenant_id, key).await
    }

    /// Cancels a waiting run, or asks the worker of a running one to stop it; writes an audit
    /// record in the same transaction when it changed anything.
    pub async fn cancel_run(
        &self,
        tenant_id: &str,
        id: &str,
        actor: &str,
    ) -> Result<Cancelled, StoreError> {
        findable(&[tenant_id, id])?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let state = self.locked_state(&mut tx, tenant_id, id).await?;
        let outcome = match state {
            RunState::Queued | RunState::Retrying => {
                sqlx::query(
                    "UPDATE runs SET state = 'cancelled', finished_at = $3, updated_at = $3 \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant_id)
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Cancelled::Now
            }
            RunState::Running => {
                sqlx::query(
                    "UPDATE runs SET cancel_requested = 1, updated_at = $3 \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant_id)
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if self.kind == DbKind::Postgres {
                    sqlx::query(&format!("SELECT pg_notify('{CANCELS_CHANNEL}', '')"))
                        .execute(&mut *tx)
                        .await?;
                }
                Cancelled::Requested
            }
            ended => return Ok(Cancelled::AlreadyEnded(ended)),
        };
        let detail = serde_json::json!({ "previous_state": state.as_str() });
        audit(
            &mut tx,
            self.audit_at(),
            tenant_id,
            actor,
            "cancel",
            id,
            &detail,
        )
        .await?;
        tx.commit().await?;
        if outcome == Cancelled::Requested {
            // The worker, if it is this process's, stops the guest now, not at a heartbeat.
            self.lease_checks.notify_one();
        }
        Ok(outcome)
    }

    /// Puts a dead or cancelled run back in the queue from step `from` (default: the step
    /// that failed); journaled steps before it keep their outputs and are not run again, and
    /// of a `for_each` at `from` the iterations `items` says (each kept one is not run
    /// again). `version`: the workflow version to run from now on (the caller checked that
    /// its steps before `from` are the journaled ones); `None` keeps the run's.
    ///
    /// A replay is a run to the tenant's limits, checked and counted in this transaction:
    /// [`StoreError::LimitReached`] past `admit.max_queued` waiting runs, and
    /// [`StoreError::OverQuota`] past `admit.runs_per_hour` (nothing is written either way).
    #[allow(clippy::too_many_arguments)]
    pub async fn replay_run(
        &self,
        tenant_id: &str,
        id: &str,
        from: Option<i64>,
        items: KeptItems,
        version: Option<i64>,
        admit: ReplayAdmission,
        actor: &str,
    ) -> Result<Result<RunRecord, ReplayRefusal>, StoreError> {
        findable(&[tenant_id, id])?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let state = self.locked_state(&mut tx, tenant_id, id).await?;
        if !matches!(state, RunState::Dead | RunState::Cancelled) {
            return Ok(Err(ReplayRefusal::State(state)));
        }
        let row = sqlx::query(
            "SELECT next_step, error, workflow_version FROM runs WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let next_step: i64 = row.try_get("next_step")?;
        let error: Option<String> = row.try_get("error")?;
        let ran_version: i64 = row.try_get("workflow_version")?;
        let from = from.unwrap_or(next_step);
        if from > next_step || from < 0 {
            return Ok(Err(ReplayRefusal::NotReached { next_step }));
        }
        let waiting: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM runs WHERE tenant_id = $1 AND {WAITING}"
        ))
        .bind(tenant_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if waiting >= i64::try_from(admit.max_queued).unwrap_or(i64::MAX) {
            return Err(StoreError::LimitReached {
                quota: "max_queued_runs",
                limit: admit.max_queued,
            });
        }
        super::usage::count_run(&mut tx, tenant_id, admit.runs_per_hour, self.clock.now_ms())
            .await?;
        for table in ["run_items", "run_steps"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE tenant_id = $1 AND run_id = $2 AND step_index > $3"
            ))
            .bind(tenant_id)
            .bind(id)
            .bind(from)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "DELETE FROM run_steps WHERE tenant_id = $1 AND run_id = $2 AND step_index = $3",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(from)
        .execute(&mut *tx)
        .await?;
        // The iterations of a `for_each` at `from` that run again: none, all, or those from
        // a body step on (of every item, or of one).
        let (body_from, item) = match items {
            KeptItems::All => (None, None),
            KeptItems::None => (Some(0), None),
            KeptItems::From { body_index, item } => (Some(body_index), item),
        };
        if let Some(body_from) = body_from {
            sqlx::query(
                "DELETE FROM run_items WHERE tenant_id = $1 AND run_id = $2 AND step_index = $3 \
                 AND body_index >= $4 AND ($5 IS NULL OR item = $5)",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(from)
            .bind(body_from)
            .bind(item)
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query(&format!(
            "UPDATE runs SET state = 'queued', next_step = $3, attempt = 0, run_at = $4, \
               error = NULL, output = NULL, finished_at = NULL, cancel_requested = 0, \
               lease_owner = NULL, lease_until = NULL, updated_at = $4, workflow_version = $5 \
             WHERE tenant_id = $1 AND id = $2 RETURNING {RUN_COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(from)
        .bind(now)
        .bind(version.unwrap_or(ran_version))
        .fetch_one(&mut *tx)
        .await?;
        let detail = serde_json::json!({
            "previous_state": state.as_str(),
            "from_step": from,
            "iterations": items.describe(),
            "workflow_version": { "ran": ran_version, "now": version.unwrap_or(ran_version) },
            "previous_error": error.and_then(|e| serde_json::from_str::<serde_json::Value>(&e).ok()),
        });
        audit(
            &mut tx,
            self.audit_at(),
            tenant_id,
            actor,
            "replay",
            id,
            &detail,
        )
        .await?;
        ensure_run_tenant(&mut tx, tenant_id).await?;
        self.notify_in(&mut tx).await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(Ok(run(&row)?))
    }

    async fn locked_state(
        &self,
        tx: &mut Tx<'_>,
        tenant_id: &str,
        id: &str,
    ) -> Result<RunState, StoreError> {
        let lock = match self.kind {
            DbKind::Postgres => " FOR UPDATE",
            DbKind::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT state FROM runs WHERE tenant_id = $1 AND id = $2{lock}"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        RunState::read(&row)
    }

    pub async fn run(&self, tenant_id: &str, id: &str) -> Result<RunRecord, StoreError> {
        findable(&[tenant_id, id])?;
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        run(&row)
    }

    /// The run's journal, by step.
    pub async fn run_steps(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Vec<StepRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT step_index, step_id, status, attempts, output, error, logs, fuel_used, \
               duration_us, peak_memory_bytes, outbound_requests, outbound_bytes, finished_at \
             FROM run_steps WHERE tenant_id = $1 AND run_id = $2 ORDER BY step_index",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(step).collect()
    }

    /// Bytes of log the run's journaled iteration steps hold (counted against the run's log
    /// budget when it is claimed again).
    pub async fn run_items_log_bytes(&self, tenant_id: &str, id: &str) -> Result<u64, StoreError> {
        let bytes: Option<i64> = sqlx::query(
            "SELECT SUM(LENGTH(logs)) AS n FROM run_items WHERE tenant_id = $1 AND run_id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(u64::try_from(bytes.unwrap_or(0)).unwrap_or(0))
    }

    /// One page of the run's journaled iteration steps with their logs, in order (step
    /// index, item, body index), after the row `after` names; at most `limit`.
    pub async fn run_item_page(
        &self,
        tenant_id: &str,
        id: &str,
        after: Option<(i64, i64, i64)>,
        limit: i64,
    ) -> Result<Vec<(i64, ItemRecord, String)>, StoreError> {
        findable(&[tenant_id, id])?;
        let (s, i, b) = after.unwrap_or((-1, -1, -1));
        let rows = sqlx::query(
            "SELECT step_index, item, body_index, step_id, status, output, logs, finished_at \
             FROM run_items WHERE tenant_id = $1 AND run_id = $2 \
               AND (step_index, item, body_index) > ($3, $4, $5) \
             ORDER BY step_index, item, body_index LIMIT $6",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(s)
        .bind(i)
        .bind(b)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("step_index")?,
                    item_record(row)?,
                    row.try_get("logs")?,
                ))
            })
            .collect()
    }

    /// The journaled iteration steps of the `for_each` at `index` (every `for_each` of the
    /// run: `None`), in order, at most `limit`.
    pub async fn run_items(
        &self,
        tenant_id: &str,
        id: &str,
        index: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Vec<(i64, ItemRecord)>, StoreError> {
        let rows = sqlx::query(
            "SELECT step_index, item, body_index, step_id, status, output, finished_at \
             FROM run_items WHERE tenant_id = $1 AND run_id = $2 \
               AND ($3 < 0 OR step_index = $3) \
             ORDER BY step_index, item, body_index LIMIT $4",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(index.unwrap_or(-1))
        .bind(limit.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("step_index")?, item_record(row)?)))
            .collect()
    }

    /// The tenant's runs, newest first, one page.
    pub async fn list_runs(
        &self,
        tenant_id: &str,
        filter: &RunFilter,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE tenant_id = $1");
        let mut n = 1;
        let mut next = |sql: &mut String, clause: &str| {
            n += 1;
            sql.push_str(&clause.replace("$?", &format!("${n}")));
        };
        if filter.workflow_id.is_some() {
            next(&mut sql, " AND workflow_id = $?");
        }
        if filter.state.is_some() {
            next(&mut sql, " AND state = $?");
        }
        if filter.created_from.is_some() {
            next(&mut sql, " AND created_at >= $?");
        }
        if filter.created_before.is_some() {
            next(&mut sql, " AND created_at < $?");
        }
        if filter.after.is_some() {
            n += 2;
            sql.push_str(&format!(
                " AND (created_at < ${a} OR (created_at = ${a} AND id < ${b}))",
                a = n - 1,
                b = n
            ));
        }
        n += 1;
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT ${n}"));
        let mut query = sqlx::query(&sql).bind(tenant_id);
        if let Some(workflow) = &filter.workflow_id {
            query = query.bind(workflow);
        }
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        if let Some(from) = filter.created_from {
            query = query.bind(from);
        }
        if let Some(before) = filter.created_before {
            query = query.bind(before);
        }
        if let Some((created_at, id)) = &filter.after {
            query = query.bind(*created_at).bind(id);
        }
        let rows = query.bind(filter.limit).fetch_all(&self.pool).await?;
        rows.iter().map(run).collect()
    }

    /// Runs due and waiting in the queue, every tenant: the backpressure and readiness
    /// figure. A run waiting for a later time (a `sleep`, a retry's backoff) is not backlog:
    /// counted, a tenant's long sleeps would fill the queue for every tenant.
    pub async fn queue_depth(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM runs WHERE {WAITING} AND run_at <= $1"
        ))
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?)
    }

    /// When the oldest run that is due and not claimed became due (ms), if one waits: how
    /// far behind the workers are. Read at metrics scrape.
    pub async fn oldest_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT MIN(run_at) AS t FROM runs WHERE {WAITING} AND run_at <= $1"
        ))
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("t")?)
    }

    /// The tenant's audit records, oldest first, after `after` (an id from the last page).
    pub async fn audit_records(
        &self,
        tenant_id: &str,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, run_id, detail FROM audit_log \
             WHERE tenant_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(tenant_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    run_id: row.try_get("run_id")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }

    /// The tenant's usage per UTC day, newest first.
    pub async fn usage_days(
        &self,
        tenant_id: &str,
        days: i64,
    ) -> Result<Vec<DayUsage>, StoreError> {
        let rows = sqlx::query(
            "SELECT day, runs, steps, fuel_used, duration_us, outbound_requests, outbound_bytes \
             FROM usage_days WHERE tenant_id = $1 ORDER BY day DESC LIMIT $2",
        )
        .bind(tenant_id)
        .bind(days)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DayUsage {
                    day: row.try_get("day")?,
                    runs: row.try_get("runs")?,
                    steps: row.try_get("steps")?,
                    fuel_used: row.try_get("fuel_used")?,
                    duration_us: row.try_get("duration_us")?,
                    outbound_requests: row.try_get("outbound_requests")?,
                    outbound_bytes: row.try_get("outbound_bytes")?,
                })
            })
            .collect()
    }

    /// Wakes this process's idle workers (a run became claimable).
    pub fn wake_workers(&self) {
        self.wakeups.notify_waiters();
    }

    /// What idle workers wait on: this process's wake-ups, and on PostgreSQL every
    /// process's (see [`Store::listen_for_runs`]).
    pub fn wakeups(&self) -> &std::sync::Arc<tokio::sync::Notify> {
        &self.wakeups
    }

    /// What the lease keeper waits on besides its heartbeat: a cancel asked for in this
    /// process, or (PostgreSQL) in another.
    pub fn lease_checks(&self) -> &std::sync::Arc<tokio::sync::Notify> {
        &self.lease_checks
    }

    /// PostgreSQL: `NOTIFY` at commit of `tx`, for the workers of other processes.
    pub(crate) async fn notify_in(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        notify_runs(tx, self.kind).await
    }

    /// PostgreSQL: `LISTEN`s for other processes' enqueues and cancels and forwards them to
    /// [`Store::wakeups`] and [`Store::lease_checks`] until `stop`; reconnects after a failure. SQLite: returns at once
    /// (one process, woken in memory).
    pub async fn listen_for_runs(&self, stop: tokio_util::sync::CancellationToken) {
        if self.kind != DbKind::Postgres {
            return;
        }
        while !stop.is_cancelled() {
            let listening = async {
                let mut listener = sqlx::postgres::PgListener::connect(self.url.expose()).await?;
                listener.listen_all([RUNS_CHANNEL, CANCELS_CHANNEL]).await?;
                loop {
                    let notification = listener.recv().await?;
                    if notification.channel() == CANCELS_CHANNEL {
                        self.lease_checks.notify_one();
                    } else {
                        self.wake_workers();
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                result = listening => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "run notifications interrupted; polling meanwhile");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }
}

const RUNS_CHANNEL: &str = "airlock_runs";
/// Cancels asked for: every process's lease keeper checks its runs at once.
pub(crate) const CANCELS_CHANNEL: &str = "airlock_cancels";

/// PostgreSQL: tells every process's workers, once `tx` commits, that runs are claimable.
pub(crate) async fn notify_runs(tx: &mut Tx<'_>, kind: DbKind) -> Result<(), StoreError> {
    if kind == DbKind::Postgres {
        sqlx::query(&format!("SELECT pg_notify('{RUNS_CHANNEL}', '')"))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Runs inserted one by one in a transaction: PostgreSQL's run creation, and cron ticks on
/// both databases (a SQLite creation batch has its own, `enqueue/batch.rs`). What is per run
/// (the insert, the limits as guarded statements) happens in [`RunInserts::insert`]; what
/// only adds up (the tenant's place in the claim rotation, the day's usage) is written once
/// per tenant by [`RunInserts::finish`], and each tenant's waiting runs are counted once.
/// The caller notifies the workers and commits.
pub(crate) struct RunInserts {
    now: i64,
    /// `hour_now` of `runs_per_hour`: the run counter's clock.
    hour_now: i64,
    /// Per tenant: runs waiting (counted once, then kept up to date here), runs created.
    tenants: std::collections::HashMap<String, (i64, i64)>,
}

impl RunInserts {
    pub(crate) fn new(now: i64, hour_now: i64) -> RunInserts {
        RunInserts {
            now,
            hour_now,
            tenants: std::collections::HashMap::new(),
        }
    }

    /// Inserts a queued run, unless the tenant has `max_queued` runs waiting
    /// ([`StoreError::LimitReached`]) or, when `new.runs_per_hour` asks for it, has used its
    /// hour ([`StoreError::OverQuota`]). `None`: a run with the same idempotency key exists;
    /// nothing was counted and no limit applied, so a retried request always finds its run.
    /// Never fails on a taken key (on PostgreSQL that would abort `tx`, and with it a batch).
    ///
    /// The insert comes first: a taken key answers before any count is read, and a refused
    /// run is deleted again before the transaction commits.
    pub(crate) async fn insert(
        &mut self,
        tx: &mut Tx<'_>,
        tenant_id: &str,
        new: &NewRun,
    ) -> Result<Option<RunRecord>, StoreError> {
        let sql = insert_runs_sql(1, RUN_COLUMNS);
        let row = bind_new_run(sqlx::query(&sql), tenant_id, new, self.now)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record = run(&row)?;
        let waiting = match self.tenants.get_mut(tenant_id) {
            Some((waiting, _)) => {
                *waiting += 1;
                *waiting
            }
            None => {
                // Counted after the insert, so the run just inserted is in it.
                let waiting: i64 = sqlx::query(&format!(
                    "SELECT COUNT(*) AS n FROM runs WHERE tenant_id = $1 AND {WAITING}"
                ))
                .bind(tenant_id)
                .fetch_one(&mut **tx)
                .await?
                .try_get("n")?;
                self.tenants.insert(tenant_id.to_owned(), (waiting, 0));
                waiting
            }
        };
        let refused = if waiting > i64::try_from(new.max_queued).unwrap_or(i64::MAX) {
            Some(StoreError::LimitReached {
                quota: "max_queued_runs",
                limit: new.max_queued,
            })
        } else if let Some(limit) = new.runs_per_hour {
            match super::usage::count_run(tx, tenant_id, limit, self.hour_now).await {
                Ok(()) => None,
                Err(over @ StoreError::OverQuota { .. }) => Some(over),
                Err(other) => return Err(other),
            }
        } else {
            None
        };
        let counts = self.tenants.entry(tenant_id.to_owned()).or_default();
        if let Some(refused) = refused {
            sqlx::query("DELETE FROM runs WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(&record.id)
                .execute(&mut **tx)
                .await?;
            counts.0 -= 1;
            return Err(refused);
        }
        counts.1 += 1;
        Ok(Some(record))
    }

    /// Writes what the inserted runs add up to: each tenant's place in the claim rotation
    /// and its day's run count.
    pub(crate) async fn finish(self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let mut created: Vec<(String, i64)> = self
            .tenants
            .into_iter()
            .filter(|(_, (_, created))| *created > 0)
            .map(|(tenant, (_, created))| (tenant, created))
            .collect();
        // The same order in every transaction, so two on PostgreSQL never wait on each
        // other's tenant rows in opposite orders.
        created.sort_unstable();
        for (tenant_id, runs) in created {
            ensure_run_tenant(tx, &tenant_id).await?;
            add_usage(tx, &tenant_id, self.now, runs, 0, &Cost::default()).await?;
        }
        Ok(())
    }
}

/// Parameters per row of [`insert_runs_sql`].
pub(crate) const INSERT_PARAMS: usize = 11;

/// An insert of `rows` queued runs, each bound by [`bind_new_run`] in order, that skips
/// (never fails on) a taken idempotency key and returns `returning` of the runs inserted.
pub(crate) fn insert_runs_sql(rows: usize, returning: &str) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let [
                tenant,
                id,
                workflow,
                version,
                input,
                key,
                hash,
                trigger,
                trace,
                parent,
                now,
            ] = std::array::from_fn(|i| r * INSERT_PARAMS + i + 1);
            format!(
                "(${tenant}, ${id}, ${workflow}, ${version}, 'queued', ${input}, ${key}, \
                 ${hash}, ${trigger}, ${trace}, ${parent}, ${now}, ${now}, ${now})"
            )
        })
        .collect();
    format!(
        "INSERT INTO runs (tenant_id, id, workflow_id, workflow_version, state, input, \
           idempotency_key, request_hash, trigger_id, trace_id, trace_parent, run_at, created_at, \
           updated_at) \
         VALUES {} \
         ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL \
         DO NOTHING RETURNING {returning}",
        values.join(", ")
    )
}

impl RunRecord {
    /// The row [`insert_runs_sql`] writes for `new` at `now`, without reading it back.
    pub(crate) fn queued(new: &NewRun, now: i64) -> RunRecord {
        RunRecord {
            id: new.id.clone(),
            workflow_id: new.workflow_id.clone(),
            workflow_version: new.workflow_version,
            state: RunState::Queued,
            input: new.input.clone(),
            idempotency_key: new.idempotency_key.clone(),
            request_hash: new.request_hash.clone(),
            trigger_id: new.trigger_id.clone(),
            trace_id: new.trace_id.clone(),
            trace_parent: new.trace_parent.clone(),
            next_step: 0,
            attempt: 0,
            run_at: now,
            lease_epoch: 0,
            cancel_requested: false,
            output: None,
            error: None,
            cost: Cost::default(),
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            handles: None,
        }
    }
}

/// Binds one row of [`insert_runs_sql`].
pub(crate) fn bind_new_run<'q>(
    query: AnyQuery<'q>,
    tenant_id: &'q str,
    new: &'q NewRun,
    now: i64,
) -> AnyQuery<'q> {
    query
        .bind(tenant_id)
        .bind(&new.id)
        .bind(&new.workflow_id)
        .bind(new.workflow_version)
        .bind(&new.input)
        .bind(new.idempotency_key.as_deref())
        .bind(new.request_hash.as_deref())
        .bind(new.trigger_id.as_deref())
        .bind(new.trace_id.as_deref())
        .bind(new.trace_parent.as_deref())
        .bind(now)
}

/// The `SET` clause adding a step's cost to its run's totals (the peak memory as a
/// maximum), with its five values at `$first`..`$first + 4`, bound by [`bind_cost`].
pub(crate) fn add_cost(first: usize) -> String {
    let [fuel, duration, memory, requests, bytes] = std::array::from_fn(|i| first + i);
    format!(
        "fuel_used = fuel_used + ${fuel}, duration_us = duration_us + ${duration}, \
         peak_memory_bytes = CASE WHEN peak_memory_bytes > ${memory} \
           THEN peak_memory_bytes ELSE ${memory} END, \
         outbound_requests = outbound_requests + ${requests}, \
         outbound_bytes = outbound_bytes + ${bytes}"
    )
}

pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds the values of [`add_cost`], in its order.
pub(crate) fn bind_cost<'q>(query: AnyQuery<'q>, cost: &Cost) -> AnyQuery<'q> {
    query
        .bind(cost.fuel_used)
        .bind(cost.duration_us)
        .bind(cost.peak_memory_bytes)
        .bind(cost.outbound_requests)
        .bind(cost.outbound_bytes)
}

/// [`Store::run_by_key`] inside `tx`.
pub(crate) async fn run_by_key_in(
    tx: &mut Tx<'_>,
    tenant_id: &str,
    key: &str,
) -> Result<Option<RunRecord>, StoreError> {
    run_by_key_on(&mut **tx, tenant_id, key).await
}

async fn run_by_key_on<'e>(
    on: impl sqlx::Executor<'e, Database = sqlx::Any>,
    tenant_id: &str,
    key: &str,
) -> Result<Option<RunRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE tenant_id = $1 AND idempotency_key = $2"
    ))
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(on)
    .await?;
    row.as_ref().map(run).transpose()
}

/// Gives the tenant its place in the claim rotation (`run_tenants`) if it has none.
async fn ensure_run_tenant(tx: &mut Tx<'_>, tenant_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO run_tenants (tenant_id, last_turn) VALUES ($1, 0) \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn add_usage(
    tx: &mut Tx<'_>,
    tenant_id: &str,
    now: i64,
    runs: i64,
    steps: i64,
    cost: &Cost,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO usage_days (tenant_id, day, runs, steps, fuel_used, duration_us, \
           outbound_requests, outbound_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (tenant_id, day) DO UPDATE SET runs = usage_days.runs + excluded.runs, \
           steps = usage_days.steps + excluded.steps, \
           fuel_used = usage_days.fuel_used + excluded.fuel_used, \
           duration_us = usage_days.duration_us + excluded.duration_us, \
           outbound_requests = usage_days.outbound_requests + excluded.outbound_requests, \
           outbound_bytes = usage_days.outbound_bytes + excluded.outbound_bytes",
    )
    .bind(tenant_id)
    .bind(now.div_euclid(DAY_MS))
    .bind(runs)
    .bind(steps)
    .bind(cost.fuel_used)
    .bind(cost.duration_us)
    .bind(cost.outbound_requests)
    .bind(cost.outbound_bytes)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A cancel or replay, audited in the transaction that made it (see `audit.rs`).
#[allow(clippy::too_many_arguments)]
async fn audit(
    tx: &mut Tx<'_>,
    (kind, at): (DbKind, i64),
    tenant_id: &str,
    actor: &str,
    action: &str,
    run_id: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    let draft = crate::audit::AuditDraft {
        tenant_id: tenant_id.to_owned(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: run_id.to_owned(),
        request_id: String::new(),
        detail: detail.clone(),
    };
    crate::audit::append(tx, (kind, at), &draft, run_id).await?;
    Ok(())
}

fn item_record(row: &AnyRow) -> Result<ItemRecord, StoreError> {
    Ok(ItemRecord {
        item: row.try_get("item")?,
        body_index: row.try_get("body_index")?,
        step_id: row.try_get("step_id")?,
        status: row.try_get("status")?,
        output: row.try_get("output")?,
        finished_at: row.try_get("finished_at")?,
    })
}
