//! Synchronous invocation: `POST /v1/connectors/{name}/actions/{action}/invoke` runs one
//! action under the tenant's limits as stored right now, with the connection's decrypted
//! credential and the database-backed state store; and `GET /v1/usage`.
//!
//! Status codes: a guest that ran and failed (a limit, its own error, bad output) is 200 with
//! `ok: false` and the error kind, logs and stats; a request the runtime refused before the
//! guest ran is a problem: unknown action 404, invalid input 422 (`field` is the JSON pointer
//! into the body), runs per hour used up 429, no instance slot (the pool and its queue, or the
//! tenant's own queue, are full, or the wait timed out) 503; both with Retry-After.

use airlock_core::{Charge, Invocation, Ran};
use airlock_model::{ConnectionId, TenantId};
use airlock_runtime::Call;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Member, Reader, TenantQuery, at_least};
use super::error::{ApiError, Json};
use super::openapi::problem;
use super::trace::RequestTrace;

/// An invoke body carries the action's input, which the tenant's `max_input_bytes` bounds
/// (up to its 16 MiB cap): the route admits the cap plus room for the envelope, and the
/// runtime then applies the tenant's own limit (`invalid_input`, 422).
const MAX_INVOKE_BODY_BYTES: usize = 16 * 1024 * 1024 + 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/connectors/{name}/actions/{action}/invoke",
            post(invoke).layer(DefaultBodyLimit::max(MAX_INVOKE_BODY_BYTES)),
        )
        .route(
            "/connectors/{name}/actions/{action}/test",
            post(test_action).layer(DefaultBodyLimit::max(MAX_INVOKE_BODY_BYTES)),
        )
        .route("/usage", get(usage))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    /// Id of the connection whose credential the gate attaches; none for connectors without
    /// auth.
    pub connection: Option<String>,
    /// The action's input; checked against its input schema.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
    /// The connector version to run; default: the newest not deprecated.
    pub version: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// What one invocation did.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvokeResponse {
    pub ok: bool,
    /// The action's output (any JSON value its output schema allows) when `ok`; null when not.
    #[schema(value_type = Value)]
    pub output: Value,
    /// Null when `ok`; otherwise `{kind, message, pointer?, connector_kind?, retryable}`;
    /// kinds are listed in docs/limits.md.
    #[schema(value_type = Option<Object>, required = true)]
    pub error: Value,
    /// `{lines: [{level, source, message}], dropped_bytes, dropped_lines}`.
    #[schema(value_type = Object)]
    pub logs: Value,
    /// `{fuel_used, duration_us, peak_memory_bytes, outbound_requests, ..., limit_hit}`.
    #[schema(value_type = Object)]
    pub stats: Value,
    pub connector: ConnectorRef,
}

/// What `testAction` saw: the action's HTTP exchanges as they went over the wire, and its
/// result.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestActionResponse {
    /// The first request as sent: `{method, url, headers: [[name, value]], body,
    /// body_truncated}`, the credential's values shown as `***` and every form of them
    /// scrubbed; null when the action sent nothing.
    #[schema(value_type = Option<Object>, required = true)]
    pub request: Value,
    /// The last response the connector was given: `{status, headers, body, body_truncated}`
    /// (bodies cut at 64 KiB); null when none came.
    #[schema(value_type = Option<Object>, required = true)]
    pub response: Value,
    /// Every exchange in order (redirect hops and pages included): `[{request, response,
    /// error}]`.
    #[schema(value_type = Vec<Object>)]
    pub exchanges: Value,
    /// The result, as `invoke` returns it.
    pub result: InvokeResponse,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorRef {
    pub name: String,
    pub version: String,
    pub digest: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub tenant: String,
    /// Runs counted in the current clock hour (UTC).
    pub runs_this_hour: i64,
    pub runs_per_hour: u32,
}

impl InvokeResponse {
    /// The response for a guest that ran: `ok` and its output, or its error, with logs and
    /// stats either way.
    pub(crate) fn from_ran(ran: Ran) -> InvokeResponse {
        let Ran { connector, outcome } = ran;
        let (ok, output, error) = match outcome.result {
            Ok(output) => (true, output, Value::Null),
            Err(error) => (
                false,
                Value::Null,
                serde_json::to_value(&error).unwrap_or(Value::Null),
            ),
        };
        InvokeResponse {
            ok,
            output,
            error,
            logs: serde_json::to_value(&outcome.logs).unwrap_or(Value::Null),
            stats: serde_json::to_value(&outcome.stats).unwrap_or(Value::Null),
            connector: ConnectorRef {
                name: connector.name.clone(),
                version: connector.version.clone(),
                digest: connector.digest.clone(),
            },
        }
    }
}

/// Runs one action of the tenant's connector. 404 when there is no such connector, version,
/// connection or action; 422 when the input fails the action's schema (`field` points at it);
/// 429 when the tenant's runs per hour are used up; 503 `overloaded` when every instance slot
/// is busy (both with Retry-After).
#[utoipa::path(post, path = "/v1/connectors/{name}/actions/{action}/invoke", tag = "invoke",
    params(("name" = String, Path), ("action" = String, Path)), request_body = InvokeBody,
    responses(
        (status = 200, description = "the guest ran; `ok` says whether it succeeded", body = InvokeResponse),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 413, response = problem::PayloadTooLarge), (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable), (status = 429, response = problem::TooManyRequests),
        (status = 502, response = problem::BadGateway), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn invoke(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path((name, action)): Path<(String, String)>,
    trace: RequestTrace,
    Json(body): Json<InvokeBody>,
) -> Result<Json<InvokeResponse>, ApiError> {
    let ran = state
        .pipeline()
        .invoke(action_call(&caller, name, action, body, trace))
        .await?;
    Ok(Json(InvokeResponse::from_ran(ran)))
}

/// Runs one action like `invoke` (counted as a run, with the same checks and limits) and
/// answers what went over the wire as well: the request as sent with the credential masked,
/// the response, and the result. For authoring a connector against a real or mock upstream.
#[utoipa::path(post, path = "/v1/connectors/{name}/actions/{action}/test", tag = "invoke",
    params(("name" = String, Path), ("action" = String, Path)), request_body = InvokeBody,
    responses(
        (status = 200, description = "the guest ran; `result.ok` says whether it succeeded", body = TestActionResponse),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 413, response = problem::PayloadTooLarge), (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable), (status = 429, response = problem::TooManyRequests),
        (status = 502, response = problem::BadGateway), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn test_action(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path((name, action)): Path<(String, String)>,
    trace: RequestTrace,
    Json(body): Json<InvokeBody>,
) -> Result<Json<TestActionResponse>, ApiError> {
    let mut ran = state
        .pipeline()
        .invoke_traced(action_call(&caller, name, action, body, trace))
        .await?;
    let exchanges = std::mem::take(&mut ran.outcome.trace);
    let request = exchanges
        .first()
        .and_then(|e| serde_json::to_value(&e.request).ok())
        .unwrap_or(Value::Null);
    let response = exchanges
        .iter()
        .rev()
        .find_map(|e| e.response.as_ref())
        .and_then(|r| serde_json::to_value(r).ok())
        .unwrap_or(Value::Null);
    Ok(Json(TestActionResponse {
        request,
        response,
        exchanges: serde_json::to_value(&exchanges).unwrap_or(Value::Null),
        result: InvokeResponse::from_ran(ran),
    }))
}

/// One action of the caller's tenant as `invoke` and `testAction` run it: counted as a run.
fn action_call(
    caller: &Member<at_least::Editor>,
    connector: String,
    action: String,
    body: InvokeBody,
    trace: RequestTrace,
) -> Invocation {
    Invocation {
        tenant: TenantId::new(caller.tenant()),
        connector: Some(connector),
        version: body.version,
        connection: body.connection.map(ConnectionId::from),
        call: Call::Action {
            action,
            input: body.input.to_string(),
        },
        charge: Charge::Run,
        timeout_ms: None,
        idempotency_key: None,
        trace_context: Some(trace.0),
    }
}

/// The tenant's runs this hour and its hourly limit.
#[utoipa::path(get, path = "/v1/usage", tag = "invoke", params(TenantQuery),
    responses((status = 200, body = Usage),
        (status = 401, response = problem::Unauthorized), (status = 403, response = problem::Forbidden),
        (status = 404, response = problem::NotFound), (status = 422, response = problem::Unprocessable),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn usage(State(state): State<AppState>, caller: Reader) -> Result<Json<Usage>, ApiError> {
    let tenant = caller.tenant();
    let quota = state.pipeline().quota(tenant).await?;
    let runs = state.store().runs_this_hour(tenant).await?;
    Ok(Json(Usage {
        tenant: tenant.to_owned(),
        runs_this_hour: runs,
        runs_per_hour: quota.runs_per_hour,
    }))
}
