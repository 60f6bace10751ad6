//! Workflows: ordered steps, each an action of one of the tenant's connectors, with inputs
//! mapped from the trigger payload and earlier steps' outputs. Saving a change makes a new
//! immutable version; a run keeps the version it started with. Runs are started here too
//! (`POST /v1/workflows/{id}/runs`).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{Member, at_least};
use super::error::{ApiError, Json};
use super::openapi::problem;
use super::runs::Run;
use super::trace::RequestTrace;
use airlock_model::WorkflowSpec;
use airlock_runs::Workflow as SavedWorkflow;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/workflows", get(list).post(create))
        .route("/workflows/{id}", get(show).put(update).delete(remove))
        .route("/workflows/{id}/runs", post(start_run))
}

/// One action step of a workflow (documentation of the `steps` items; the server parses
/// them strictly: unknown fields are refused). A step may instead be a `switch`, a
/// `for_each` or a `sleep` (docs/api.md, "Control flow"): an object with `id`, an optional
/// `when` and one of those members.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // Read through `WorkflowSpec`; this type only describes the format.
pub struct WorkflowStep {
    /// Unique in the workflow: 1-64 of `a-z`, `0-9`, `_`, `-`, starting with a letter.
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,63}$")]
    pub id: String,
    /// A connector of the tenant.
    #[schema(min_length = 1, max_length = 200)]
    pub connector: String,
    /// A pinned connector version; absent: the newest not deprecated when the step runs.
    #[schema(min_length = 1, max_length = 200)]
    pub version: Option<String>,
    /// One of the connector's actions.
    #[schema(min_length = 1, max_length = 200)]
    pub action: String,
    /// The connection the step runs with (required when the connector has an auth type).
    #[schema(min_length = 1, max_length = 200)]
    pub connection: Option<String>,
    /// The input template: literal JSON, where `{"$from": "<JSON Pointer>"}` is replaced by
    /// the value at `/trigger/...` (the run's input) or `/steps/<earlier step id>/...` (that
    /// step's output), or by its `"default"` member when nothing is there, and
    /// `{"$literal": v}` stands for `v` as written.
    #[schema(value_type = Object)]
    pub input: Option<Value>,
    /// A predicate (docs/api.md, "Conditions") over the trigger and earlier steps: the step
    /// runs only when it holds, and is journaled `skipped` otherwise.
    #[schema(value_type = Option<Object>)]
    pub when: Option<Value>,
    /// Overrides the action's manifest retry policy; attempts are capped at 10.
    pub retry: Option<RetryBody>,
    /// The step's wall-clock budget in ms, at most the tenant's `timeout_ms`.
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct RetryBody {
    #[schema(minimum = 1, maximum = 10)]
    pub max_attempts: u32,
    pub initial_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// Unique among the tenant's workflows; 1-200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Steps run in order: at most 100, counting those inside branches and `for_each`
    /// bodies.
    #[schema(value_type = Vec<WorkflowStep>)]
    pub steps: Vec<Value>,
    /// Steps run once when a run goes dead, in a run of their own (docs/api.md, "Failure
    /// handlers"). Absent: none.
    #[serde(default)]
    #[schema(value_type = Vec<WorkflowStep>)]
    pub on_failure: Vec<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkflow {
    /// A new name; absent: unchanged.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(value_type = Vec<WorkflowStep>)]
    pub steps: Vec<Value>,
    /// Steps run once when a run goes dead, in a run of their own (docs/api.md, "Failure
    /// handlers"). Absent: none.
    #[serde(default)]
    #[schema(value_type = Vec<WorkflowStep>)]
    pub on_failure: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Workflow {
    pub id: String,
    pub name: String,
    /// The version shown (the current one unless `?version=` asked for another).
    pub version: i64,
    #[schema(value_type = Vec<Object>)]
    pub steps: Value,
    #[schema(value_type = Vec<Object>)]
    pub on_failure: Value,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<SavedWorkflow> for Workflow {
    fn from(saved: SavedWorkflow) -> Self {
        Workflow {
            id: saved.record.id,
            name: saved.record.name,
            version: saved.record.version,
            steps: serde_json::to_value(&saved.spec.steps).unwrap_or(Value::Null),
            on_failure: serde_json::to_value(&saved.spec.on_failure).unwrap_or(Value::Null),
            created_at_ms: saved.record.created_at,
            updated_at_ms: saved.record.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// A version to show instead of the current one.
    #[param(minimum = 1)]
    pub version: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// The trigger payload, a JSON object: what `/trigger/...` pointers read. Absent: `{}`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

fn check_name(name: &str) -> Result<String, ApiError> {
    super::names::check_name(name, "workflow")
}

fn parse_steps(steps: Vec<Value>, on_failure: Vec<Value>) -> Result<WorkflowSpec, ApiError> {
    check_conditions(&steps, "steps", 0)?;
    check_conditions(&on_failure, "on_failure", 0)?;
    serde_json::from_value(json!({ "steps": steps, "on_failure": on_failure }))
        .map_err(|e| ApiError::validation("steps", format!("invalid step: {e}")))
}

/// A condition's refusal names where in it, nested lists included, which serde's message
/// would not. Depth beyond what a workflow may nest is left to the model's refusal.
fn check_conditions(steps: &[Value], path: &str, depth: usize) -> Result<(), ApiError> {
    if depth > airlock_model::workflow::MAX_NESTING {
        return Ok(());
    }
    let predicate = |value: &Value, at: String| {
        airlock_model::Predicate::parse(value)
            .map(drop)
            .map_err(|e| ApiError::validation(format!("{at}{}", e.path), e.reason))
    };
    let list = |value: Option<&Value>, at: String| match value {
        Some(Value::Array(steps)) => check_conditions(steps, &at, depth + 1),
        _ => Ok(()),
    };
    for (i, step) in steps.iter().enumerate() {
        let here = format!("{path}[{i}]");
        if let Some(when) = step.get("when") {
            predicate(when, format!("{here}.when"))?;
        }
        if let Some(switch) = step.get("switch") {
            if let Some(Value::Array(cases)) = switch.get("cases") {
                for (c, case) in cases.iter().enumerate() {
                    let at = format!("{here}.switch.cases[{c}]");
                    if let Some(when) = case.get("when") {
                        predicate(when, format!("{at}.when"))?;
                    }
                    list(case.get("steps"), format!("{at}.steps"))?;
                }
            }
            list(switch.get("default"), format!("{here}.switch.default"))?;
        }
        if let Some(each) = step.get("for_each") {
            list(each.get("steps"), format!("{here}.for_each.steps"))?;
        }
    }
    Ok(())
}

/// Creates a workflow (version 1). Its connectors, actions and connections must exist in
/// the tenant (404 naming the step field otherwise). 429 `quota-exceeded` (`quota`:
/// `max_workflows`) at the tenant's limit.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", request_body = CreateWorkflow,
    responses((status = 201, body = Workflow),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType), (status = 422, response = problem::Unprocessable),
        (status = 429, response = problem::TooManyRequests), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Json(body): Json<CreateWorkflow>,
) -> Result<(StatusCode, Json<Workflow>), ApiError> {
    let tenant = caller.tenant_id();
    let name = check_name(&body.name)?;
    let spec = parse_steps(body.steps, body.on_failure)?;
    let saved = state.runs().create_workflow(&tenant, &name, &spec).await?;
    Ok((StatusCode::CREATED, Json(saved.into())))
}

/// The tenant's workflows at their current versions.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    responses((status = 200, body = Vec<Workflow>),
        (status = 401, response = problem::Unauthorized), (status = 403, response = problem::Forbidden),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    caller: Member<at_least::Viewer>,
) -> Result<Json<Vec<Workflow>>, ApiError> {
    let tenant = caller.tenant_id();
    let workflows = state.runs().list_workflows(&tenant).await?;
    Ok(Json(workflows.into_iter().map(Workflow::from).collect()))
}

/// One workflow, at its current version or at `?version=`.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path), VersionQuery),
    responses((status = 200, body = Workflow),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn show(
    State(state): State<AppState>,
    caller: Member<at_least::Viewer>,
    Path(id): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Workflow>, ApiError> {
    let tenant = caller.tenant_id();
    let saved = state.runs().workflow(&tenant, &id, query.version).await?;
    Ok(Json(saved.into()))
}

/// Saves a new version of the workflow; runs already started keep theirs.
#[utoipa::path(put, path = "/v1/workflows/{id}", tag = "workflows", params(("id" = String, Path)),
    request_body = UpdateWorkflow,
    responses((status = 200, body = Workflow),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict), (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType), (status = 422, response = problem::Unprocessable),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn update(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(id): Path<String>,
    Json(body): Json<UpdateWorkflow>,
) -> Result<Json<Workflow>, ApiError> {
    let tenant = caller.tenant_id();
    let name = body.name.as_deref().map(check_name).transpose()?;
    let spec = parse_steps(body.steps, body.on_failure)?;
    let saved = state
        .runs()
        .put_workflow(&tenant, &id, name.as_deref(), &spec)
        .await?;
    Ok(Json(saved.into()))
}

/// Deletes a workflow: no new runs; runs already created finish on their version.
#[utoipa::path(delete, path = "/v1/workflows/{id}", tag = "workflows", params(("id" = String, Path)),
    responses((status = 204, description = "deleted"),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn remove(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant_id();
    state.runs().delete_workflow(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a run of the workflow's current version (202). With an `Idempotency-Key` seen
/// before in the tenant, answers 200 with that run and starts nothing. Counted against
/// `runs_per_hour` (429 with Retry-After); 429 `quota-exceeded` (`quota`:
/// `max_queued_runs`) when the tenant has too many runs waiting; 503 `queue-full` when
/// the whole queue is past the operator's threshold.
#[utoipa::path(post, path = "/v1/workflows/{id}/runs", tag = "runs",
    params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters; a key seen before returns the run it created")),
    request_body = StartRun,
    responses((status = 202, description = "the run was created", body = Run),
        (status = 200, description = "a run with this Idempotency-Key exists; it is returned", body = Run),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType), (status = 422, response = problem::Unprocessable),
        (status = 429, response = problem::TooManyRequests), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn start_run(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(id): Path<String>,
    trace: RequestTrace,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let tenant = caller.tenant_id();
    // A run's input is what a trigger gives it, always an object (a webhook's envelope, a
    // cron tick's), and what `/trigger/<name>` pointers read; refused before anything is
    // written or charged.
    // serde reads a struct from a JSON array too (`[]` would be a body whose fields all
    // took their defaults): the body must be the object the document describes.
    if !body.is_object() {
        return Err(ApiError::validation(
            "body",
            "the request body must be a JSON object",
        ));
    }
    let body: StartRun = serde_json::from_value(body)
        .map_err(|e| ApiError::validation("input", format!("invalid body: {e}")))?;
    if !body.input.is_object() {
        return Err(ApiError::validation(
            "input",
            "the run's input must be a JSON object",
        ));
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::validation("Idempotency-Key", "must be 1-255 visible ASCII characters")
        })?),
    };
    let (run, created) = state
        .runs()
        .enqueue(&tenant, &id, &body.input, key, Some(&trace.0))
        .await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(Run::summary(run))))
}
