//! Runs of workflows: listing with filters and cursor pagination, one run with its step
//! journal, cancel and replay, the dead letters (runs in the `dead` state), the audit log
//! of replays and cancels (read-only: the API has no way to change it), and daily usage.

use axum::Extension;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::audit::AuditedInTx;
use super::auth::{Member, ReadScope, Reader, TenantQuery, at_least};
use super::error::{ApiError, Json};
use super::openapi::problem;
use airlock_runs::ReplayVersion;
use airlock_store::{Cost, ItemRecord, RunFilter, RunRecord, RunState, StepRecord};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runs", get(list))
        .route("/runs/{id}", get(show))
        .route("/runs/{id}/iterations", get(iterations))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/replay", post(replay))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/replay", post(replay_many))
        .route("/audit", get(audit))
        .route("/usage/daily", get(daily_usage))
}

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;
const MAX_REPLAY_BATCH: usize = 100;

/// What a run or a step consumed.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunStats {
    pub fuel_used: i64,
    pub duration_us: i64,
    pub peak_memory_bytes: i64,
    pub outbound_requests: i64,
    /// Request and response bytes together.
    pub outbound_bytes: i64,
}

impl From<Cost> for RunStats {
    fn from(cost: Cost) -> Self {
        RunStats {
            fuel_used: cost.fuel_used,
            duration_us: cost.duration_us,
            peak_memory_bytes: cost.peak_memory_bytes,
            outbound_requests: cost.outbound_requests,
            outbound_bytes: cost.outbound_bytes,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Run {
    pub id: String,
    pub workflow_id: String,
    pub workflow_version: i64,
    /// `queued`, `running`, `retrying`, `succeeded`, `dead` or `cancelled`.
    pub state: String,
    /// The trigger payload.
    #[schema(value_type = Object)]
    pub input: Value,
    pub idempotency_key: Option<String>,
    /// The trigger that created the run; `null` for a run started through the API.
    pub trigger_id: Option<String>,
    /// The W3C trace the run belongs to (the creating request's `traceparent`, or a new
    /// one): every step sends it upstream as `traceparent`. `null` for runs made before
    /// traces were kept.
    pub trace_id: Option<String>,
    /// The index of the first step not yet finished.
    pub next_step: i64,
    /// Failed attempts of that step so far.
    pub attempt: i64,
    /// When a queued or retrying run may start.
    pub run_at_ms: i64,
    pub cancel_requested: bool,
    /// The last step's output (any JSON value) once the run succeeded; null before.
    #[schema(value_type = Value, required = true)]
    pub output: Option<Value>,
    /// Why the run is dead: the step, its error kind and message, the attempts; null for a
    /// run that is not dead.
    #[schema(value_type = Option<Object>, required = true)]
    pub error: Option<Value>,
    pub stats: RunStats,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// For a failure-handler run (the workflow's `on_failure` steps): the dead run it
    /// handles. Its key is `failure:<that run>:<n>`.
    pub handles: Option<String>,
}

fn json_text(text: Option<&str>) -> Option<Value> {
    text.map(|t| serde_json::from_str(t).unwrap_or(Value::Null))
}

impl Run {
    pub fn summary(run: RunRecord) -> Run {
        Run {
            input: serde_json::from_str(&run.input).unwrap_or(Value::Null),
            output: json_text(run.output.as_deref()),
            error: json_text(run.error.as_deref()),
            id: run.id,
            workflow_id: run.workflow_id,
            workflow_version: run.workflow_version,
            state: run.state.as_str().to_owned(),
            idempotency_key: run.idempotency_key,
            trigger_id: run.trigger_id,
            trace_id: run.trace_id,
            next_step: run.next_step,
            attempt: run.attempt,
            run_at_ms: run.run_at,
            cancel_requested: run.cancel_requested,
            stats: run.cost.into(),
            created_at_ms: run.created_at,
            started_at_ms: run.started_at,
            finished_at_ms: run.finished_at,
            handles: run.handles,
        }
    }
}

/// One journaled step.
#[derive(Debug, Serialize, ToSchema)]
pub struct Step {
    pub index: i64,
    pub id: String,
    /// `succeeded`, `failed` (its last attempt failed; see the run's state), or `skipped`
    /// (its `when` did not hold; no output).
    pub status: String,
    pub attempts: i64,
    /// The step's output (any JSON value); null when it has none (its last attempt failed).
    #[schema(value_type = Value, required = true)]
    pub output: Option<Value>,
    /// Why its last attempt failed; null when it succeeded.
    #[schema(value_type = Option<Object>, required = true)]
    pub error: Option<Value>,
    /// The last attempt's logs: `lines`, and what was dropped past the limits.
    #[schema(value_type = Object)]
    pub logs: Value,
    pub stats: RunStats,
    pub finished_at_ms: i64,
}

impl From<StepRecord> for Step {
    fn from(step: StepRecord) -> Self {
        Step {
            output: json_text(step.output.as_deref()),
            error: json_text(step.error.as_deref()),
            logs: serde_json::from_str(&step.logs)
                .unwrap_or_else(|_| Value::Object(Default::default())),
            index: step.index,
            id: step.step_id,
            status: step.status,
            attempts: step.attempts,
            stats: step.cost.into(),
            finished_at_ms: step.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    /// One per step the run reached, in order. A `switch` step's output names the branch
    /// taken (`{"branch": "paid"}`); steps of branches not taken have no entry.
    pub steps: Vec<Step>,
    /// Each finished body step of each `for_each` item, by step index, item and body step:
    /// the first 1,000, without their logs (`GET /v1/runs/{id}/iterations` pages them all,
    /// with logs). A `for_each` still running shows here before its own step entry exists.
    pub iterations: Vec<Iteration>,
    /// More iterations are journaled than `iterations` shows.
    pub more_iterations: bool,
}

/// Iteration rows a run's document shows at most.
const SHOWN_ITERATIONS: usize = 1_000;
/// Iteration rows per page of `GET /v1/runs/{id}/iterations`.
const DEFAULT_ITERATION_PAGE: i64 = 100;
const MAX_ITERATION_PAGE: i64 = 1_000;

/// One body step of one `for_each` item.
#[derive(Debug, Serialize, ToSchema)]
pub struct Iteration {
    /// The `for_each` step's index.
    pub step_index: i64,
    pub item: i64,
    /// The body step's id: `<for_each id>.<step id>`.
    pub id: String,
    /// `succeeded` or `skipped`.
    pub status: String,
    #[schema(value_type = Value, required = true)]
    pub output: Option<Value>,
    pub finished_at_ms: i64,
    /// Its logs (as a step's), in `GET /v1/runs/{id}/iterations` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub logs: Option<Value>,
}

impl Iteration {
    fn of(step_index: i64, row: ItemRecord, logs: Option<&str>) -> Iteration {
        Iteration {
            step_index,
            item: row.item,
            id: row.step_id,
            status: row.status,
            output: json_text(row.output.as_deref()),
            finished_at_ms: row.finished_at,
            logs: logs.map(|text| serde_json::from_str(text).unwrap_or(Value::Null)),
        }
    }
}

/// A page of a run's iterations.
#[derive(Debug, Serialize, ToSchema)]
pub struct IterationPage {
    pub iterations: Vec<Iteration>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IterationQuery {
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^[0-9]{1,18}[.][0-9]{1,18}[.][0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// An operator: the tenant whose run to read (required). A member: its own.
    #[allow(dead_code)] // Read by the `Reader` extractor; here for the document and the
    // unknown-field check.
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    pub runs: Vec<Run>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A run state, as filters name it.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Dead,
    Cancelled,
}

impl From<StateName> for RunState {
    fn from(name: StateName) -> Self {
        match name {
            StateName::Queued => RunState::Queued,
            StateName::Running => RunState::Running,
            StateName::Retrying => RunState::Retrying,
            StateName::Succeeded => RunState::Succeeded,
            StateName::Dead => RunState::Dead,
            StateName::Cancelled => RunState::Cancelled,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs in this state.
    pub state: Option<StateName>,
    /// Only runs created at or after (unix ms).
    pub created_from_ms: Option<i64>,
    /// Only runs created before (unix ms).
    pub created_before_ms: Option<i64>,
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^-?[0-9]{1,18}[.][\\s\\S]+$")]
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// An operator: the tenant whose runs to read (required). A member: its own (the
    /// default); another is 404.
    #[allow(dead_code)] // Read by the `Reader` extractor; here for the document and the
    // unknown-field check.
    pub tenant: Option<String>,
}

fn filter(query: ListQuery, state: Option<RunState>) -> Result<RunFilter, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation("limit", "limit is 1-500"));
    }
    let state = state.or(query.state.map(RunState::from));
    let after =
        match query.cursor {
            None => None,
            Some(cursor) => {
                let parsed = cursor
                    .split_once('.')
                    .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_owned())));
                Some(parsed.ok_or_else(|| {
                    ApiError::validation("cursor", "not a cursor this API returned")
                })?)
            }
        };
    Ok(RunFilter {
        workflow_id: query.workflow,
        state,
        created_from: query.created_from_ms,
        created_before: query.created_before_ms,
        after,
        limit,
    })
}

async fn page(
    state: &AppState,
    tenant: &str,
    filter: RunFilter,
) -> Result<Json<RunPage>, ApiError> {
    // Keys no stored id can equal (control or invisible characters) find nothing, and
    // PostgreSQL refuses a NUL in a parameter: answer the empty page without a query.
    let unfindable = |key: &str| !airlock_contract::names::is_clean(key);
    if filter.workflow_id.as_deref().is_some_and(unfindable)
        || filter.after.as_ref().is_some_and(|(_, id)| unfindable(id))
    {
        return Ok(Json(RunPage {
            runs: Vec::new(),
            next_cursor: None,
        }));
    }
    let runs = state.store().list_runs(tenant, &filter).await?;
    let full = i64::try_from(runs.len()).unwrap_or(i64::MAX) == filter.limit;
    let next_cursor = runs
        .last()
        .filter(|_| full)
        .map(|last| format!("{}.{}", last.created_at, last.id));
    Ok(Json(RunPage {
        runs: runs.into_iter().map(Run::summary).collect(),
        next_cursor,
    }))
}

/// The tenant's runs, newest first, filtered, one page at a time.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(ListQuery),
    responses((status = 200, body = RunPage),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 422, response = problem::Unprocessable), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    caller: Reader,
    Query(query): Query<ListQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let tenant = caller.tenant();
    page(&state, tenant, filter(query, None)?).await
}

/// The dead letters: runs in the `dead` state (out of attempts, or failed in a way a retry
/// cannot fix), newest first, with their error.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "runs", params(ListQuery),
    responses((status = 200, body = RunPage),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 422, response = problem::Unprocessable), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn dead_letters(
    State(state): State<AppState>,
    caller: Reader,
    Query(query): Query<ListQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let tenant = caller.tenant();
    page(&state, tenant, filter(query, Some(RunState::Dead))?).await
}

/// One run with its step journal: each step's output, error, attempts, last logs and cost.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path), TenantQuery),
    responses((status = 200, body = RunDetail),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 422, response = problem::Unprocessable),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn show(
    State(state): State<AppState>,
    caller: Reader,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let tenant = caller.tenant();
    let run = state
        .store()
        .run(tenant, &id)
        .await
        .map_err(ApiError::or_not_found("run"))?;
    let steps = state.store().run_steps(tenant, &id).await?;
    let mut iterations = state
        .store()
        .run_items(tenant, &id, None, Some(SHOWN_ITERATIONS as i64 + 1))
        .await?;
    let more_iterations = iterations.len() > SHOWN_ITERATIONS;
    iterations.truncate(SHOWN_ITERATIONS);
    Ok(Json(RunDetail {
        run: Run::summary(run),
        steps: steps.into_iter().map(Step::from).collect(),
        iterations: iterations
            .into_iter()
            .map(|(step_index, row)| Iteration::of(step_index, row, None))
            .collect(),
        more_iterations,
    }))
}

/// Every journaled iteration of the run's `for_each` steps, with its logs, in pages, in order
/// (step index, item, body step): what `GET /v1/runs/{id}` shows the first 1,000 of.
#[utoipa::path(get, path = "/v1/runs/{id}/iterations", tag = "runs",
    params(("id" = String, Path), IterationQuery),
    responses((status = 200, body = IterationPage),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 422, response = problem::Unprocessable), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn iterations(
    State(state): State<AppState>,
    caller: Reader,
    Path(id): Path<String>,
    Query(query): Query<IterationQuery>,
) -> Result<Json<IterationPage>, ApiError> {
    let tenant = caller.tenant();
    let limit = query.limit.unwrap_or(DEFAULT_ITERATION_PAGE);
    if !(1..=MAX_ITERATION_PAGE).contains(&limit) {
        return Err(ApiError::validation("limit", "limit is 1-1000"));
    }
    let after = query
        .cursor
        .as_deref()
        .map(|cursor| {
            let mut parts = cursor.split('.').map(str::parse::<i64>);
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(Ok(s)), Some(Ok(i)), Some(Ok(b)), None) if s >= 0 && i >= 0 && b >= 0 => {
                    Ok((s, i, b))
                }
                _ => Err(ApiError::validation(
                    "cursor",
                    "not a cursor this route gave (`<step>.<item>.<body step>`)",
                )),
            }
        })
        .transpose()?;
    state
        .store()
        .run(tenant, &id)
        .await
        .map_err(ApiError::or_not_found("run"))?;
    let mut rows = state
        .store()
        .run_item_page(tenant, &id, after, limit + 1)
        .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| rows.last())
        .flatten()
        .map(|(s, row, _)| format!("{s}.{}.{}", row.item, row.body_index));
    Ok(Json(IterationPage {
        iterations: rows
            .into_iter()
            .map(|(step_index, row, logs)| Iteration::of(step_index, row, Some(&logs)))
            .collect(),
        next_cursor,
    }))
}

/// Cancels a run: a waiting one at once; a running one's guest is stopped by its worker
/// within a heartbeat (`cancel_requested: true` until then). Audited. 409 for a run that
/// has ended.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Run),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn cancel(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(id): Path<String>,
) -> Result<(Extension<AuditedInTx>, Json<Run>), ApiError> {
    let tenant = caller.tenant_id();
    state
        .runs()
        .cancel(&tenant, &id, &caller.principal.subject)
        .await?;
    let run = state.store().run(tenant.as_str(), &id).await?;
    Ok((Extension(AuditedInTx), Json(Run::summary(run))))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// The step (id) to start from; steps before it keep their journaled outputs and are not
    /// run again. Default: the step that failed (in a `for_each`: its items not done run,
    /// the journaled ones are kept). A `for_each`'s id: every item runs again; one of its
    /// body steps (`each.send`): every item runs again from that step.
    pub from_step: Option<String>,
    /// With a `for_each` (the default start, its id or a body step's): only this item (its
    /// index in the items) runs again; the others keep what they journaled.
    pub from_item: Option<u32>,
    /// `as_ran` (the default): the workflow version the run started with. `current`: the
    /// workflow's current version, once its steps before the one the replay starts from are
    /// the run's (422 otherwise). Either way each step uses its connection's current
    /// credential and config.
    #[serde(default)]
    pub workflow_version: WorkflowVersion,
}

/// Which workflow version a replay runs.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowVersion {
    #[default]
    AsRan,
    Current,
}

impl From<WorkflowVersion> for ReplayVersion {
    fn from(version: WorkflowVersion) -> Self {
        match version {
            WorkflowVersion::AsRan => ReplayVersion::AsRan,
            WorkflowVersion::Current => ReplayVersion::Current,
        }
    }
}

/// Replays a dead or cancelled run: back to the queue, from the failed step or `from_step`.
/// Counts as a run against `runs_per_hour` (429 when it is used up). Audited. 409 for a run
/// in another state.
#[utoipa::path(post, path = "/v1/runs/{id}/replay", tag = "runs", params(("id" = String, Path)),
    request_body = ReplayBody,
    responses((status = 200, body = Run),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict), (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType), (status = 422, response = problem::Unprocessable),
        (status = 429, response = problem::TooManyRequests),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn replay(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(id): Path<String>,
    Json(body): Json<ReplayBody>,
) -> Result<(Extension<AuditedInTx>, Json<Run>), ApiError> {
    let tenant = caller.tenant_id();
    let run = state
        .runs()
        .replay(
            &tenant,
            &id,
            body.from_step.as_deref(),
            body.from_item,
            body.workflow_version.into(),
            &caller.principal.subject,
        )
        .await?;
    Ok((Extension(AuditedInTx), Json(Run::summary(run))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayMany {
    /// 1-100 run ids.
    #[schema(min_items = 1, max_items = 100)]
    pub run_ids: Vec<String>,
    /// As for one run; every run must have this step.
    pub from_step: Option<String>,
    /// As for one run.
    #[serde(default)]
    pub workflow_version: WorkflowVersion,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayRefused {
    pub run_id: String,
    /// The problem `type` this run alone would have been answered with.
    #[serde(rename = "type")]
    pub type_: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayReport {
    pub replayed: Vec<Run>,
    pub refused: Vec<ReplayRefused>,
}

/// Replays many dead letters; each is replayed (and audited) or refused on its own.
#[utoipa::path(post, path = "/v1/dead-letters/replay", tag = "runs", request_body = ReplayMany,
    responses((status = 200, body = ReplayReport),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType), (status = 422, response = problem::Unprocessable),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn replay_many(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Json(body): Json<ReplayMany>,
) -> Result<(Extension<AuditedInTx>, Json<ReplayReport>), ApiError> {
    let tenant = caller.tenant_id();
    if body.run_ids.is_empty() || body.run_ids.len() > MAX_REPLAY_BATCH {
        return Err(ApiError::validation("run_ids", "1-100 run ids"));
    }
    let mut report = ReplayReport {
        replayed: Vec::new(),
        refused: Vec::new(),
    };
    for id in body.run_ids {
        match state
            .runs()
            .replay(
                &tenant,
                &id,
                body.from_step.as_deref(),
                None,
                body.workflow_version.into(),
                &caller.principal.subject,
            )
            .await
        {
            Ok(run) => report.replayed.push(Run::summary(run)),
            Err(error) => {
                // A full queue refuses this run and the rest; those replayed stay replayed,
                // so the report says which.
                let full = matches!(error, airlock_runs::RunsError::QueueFull { .. });
                let problem = ApiError::from(error).problem();
                if problem.status >= 500 && !full {
                    return Err(ApiError::Unavailable);
                }
                report.refused.push(ReplayRefused {
                    run_id: id,
                    type_: problem.type_,
                    detail: problem.detail,
                });
            }
        }
    }
    // Each replay was audited in its own transaction.
    Ok((Extension(AuditedInTx), Json(report)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    /// The tenant whose chain holds it; empty for changes outside any tenant.
    pub tenant_id: String,
    /// Its place in the tenant's hash chain (`airlock audit verify`); absent for records
    /// written before the chain existed.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub at_ms: i64,
    /// The token's subject.
    pub actor: String,
    /// `METHOD /route/template` for API changes; `replay` or `cancel` for runs.
    pub action: String,
    /// What it made or changed: an id, `name@version`, or the route's parameters.
    pub target: String,
    /// The run of a replay or cancel (absent otherwise).
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// The `X-Request-Id` of the change.
    pub request_id: String,
    #[schema(value_type = Object)]
    pub detail: Value,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Newest first, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// A member reads its own tenant's records (naming another is 404); an operator reads
    /// every tenant's and the system's, or the one it names.
    #[allow(dead_code)] // Read by the `ReadScope` extractor; here for the document and the
    // unknown-field check.
    pub tenant: Option<String>,
}

/// The audit log, newest first: every change made through the API (and the runs' replays
/// and cancels). A tenant's viewers read their tenant's; an operator reads every tenant's,
/// or one with `tenant`. Append-only: no route changes or deletes it, and the database
/// refuses updates, deletes and truncation.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 422, response = problem::Unprocessable),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn audit(
    State(state): State<AppState>,
    scope: ReadScope,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let tenant = scope.tenant;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation("limit", "limit is 1-500"));
    }
    let records = state.store().audit_log(tenant.as_deref(), limit).await?;
    Ok(Json(
        records
            .into_iter()
            .map(|r| AuditEntry {
                detail: serde_json::from_str(&r.detail).unwrap_or(Value::Null),
                id: r.id,
                tenant_id: r.tenant_id,
                seq: r.seq,
                at_ms: r.at,
                actor: r.actor,
                action: r.action,
                target: r.target,
                run_id: r.run_id,
                request_id: r.request_id,
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DailyUsage {
    /// The UTC day, `YYYY-MM-DD`.
    #[schema(format = Date, example = "2026-12-06")]
    pub date: String,
    /// The same day, as days since 1970-01-01.
    pub day: i64,
    /// Runs created.
    pub runs: i64,
    /// Step attempts finished (succeeded or failed).
    pub steps: i64,
    pub fuel_used: i64,
    pub duration_us: i64,
    pub outbound_requests: i64,
    pub outbound_bytes: i64,
}

/// The tenant's durable-run usage per UTC day, newest first (up to 90 days).
#[utoipa::path(get, path = "/v1/usage/daily", tag = "runs", params(TenantQuery),
    responses((status = 200, body = Vec<DailyUsage>),
        (status = 401, response = problem::Unauthorized), (status = 403, response = problem::Forbidden),
        (status = 404, response = problem::NotFound), (status = 422, response = problem::Unprocessable),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn daily_usage(
    State(state): State<AppState>,
    caller: Reader,
) -> Result<Json<Vec<DailyUsage>>, ApiError> {
    let tenant = caller.tenant();
    let days = state.store().usage_days(tenant, 90).await?;
    Ok(Json(
        days.into_iter()
            .map(|d| DailyUsage {
                date: super::dates::iso_date(d.day),
                day: d.day,
                runs: d.runs,
                steps: d.steps,
                fuel_used: d.fuel_used,
                duration_us: d.duration_us,
                outbound_requests: d.outbound_requests,
                outbound_bytes: d.outbound_bytes,
            })
            .collect(),
    ))
}
