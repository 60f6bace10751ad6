//! The tenant's dead-letter webhook (`/v1/dead-letters/webhook`): where a signed `run.dead`
//! event is POSTed each time one of its runs goes dead, the notices sent so far, and a test
//! send.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{Member, Reader, TenantQuery, at_least};
use super::error::{ApiError, Json};
use super::openapi::problem;
use airlock_model::TenantId;
use airlock_runs::{HookSpec, HookView};
use airlock_secrets::Secret;
use airlock_store::NoticeRecord;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dead-letters/webhook", get(show).put(put).delete(remove))
        .route("/dead-letters/webhook/notices", get(notices))
        .route("/dead-letters/webhook/test", post(test))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutWebhook {
    /// Where notices are POSTed: `https` (or `http` where the operator allows it), a host
    /// the tenant's `allowed_hosts` allow, no `user:password@`; at most 2,048 bytes.
    #[schema(max_length = 2048)]
    pub url: String,
    /// The signing secret, when you make it (Standard Webhooks: base64 of 24 to 64 bytes,
    /// `whsec_` optional). Absent: made on the first save, kept after.
    #[schema(value_type = Option<String>, max_length = 256)]
    pub secret: Option<Secret>,
    /// Make a new secret (returned this once) though none is given.
    #[serde(default)]
    pub rotate_secret: bool,
    /// After a new secret, how long the previous one keeps signing beside it (default
    /// 86,400; 0: not at all).
    #[schema(maximum = 604800)]
    pub overlap_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NoticeCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    /// The run died again before the notice was delivered; the later death's notice is sent.
    pub superseded: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    /// The signing secret: only in the answer that made or set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until when the secret before the last rotation still signs beside the new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_until_ms: Option<i64>,
    /// The tenant's notices by state.
    pub notices: NoticeCounts,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<HookView> for Webhook {
    fn from(view: HookView) -> Self {
        let r = view.record;
        Webhook {
            id: r.id,
            url: r.url,
            secret: view.secret.map(|s| s.expose().to_owned()),
            previous_secret_until_ms: r.previous_until,
            notices: NoticeCounts {
                pending: view.counts.pending,
                delivered: view.counts.delivered,
                failed: view.counts.failed,
                superseded: view.counts.superseded,
            },
            created_at_ms: r.created_at,
            updated_at_ms: r.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Notice {
    /// The `webhook-id` it is sent with, the same on every attempt.
    pub id: String,
    pub run_id: String,
    /// `pending`, `delivered`, `failed` (out of attempts, or the webhook was removed) or
    /// `superseded` (the run died again before it was delivered: that death's is sent).
    pub state: String,
    pub attempts: i64,
    /// When a pending notice is due (its next attempt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<i64>,
    /// The status of the last attempt, when the webhook answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<i64>,
    /// Why the last attempt did not deliver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The event's `data`, as sent.
    #[schema(value_type = Object)]
    pub data: Value,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<NoticeRecord> for Notice {
    fn from(r: NoticeRecord) -> Self {
        Notice {
            next_attempt_at_ms: (r.state == "pending").then_some(r.next_at),
            data: serde_json::from_str(&r.payload).unwrap_or(Value::Null),
            id: r.id,
            run_id: r.run_id,
            state: r.state,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            created_at_ms: r.created_at,
            updated_at_ms: r.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NoticeList {
    pub notices: Vec<Notice>,
}

/// A notice's state, as the filter names it.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoticeState {
    Pending,
    Delivered,
    Failed,
    Superseded,
}

impl NoticeState {
    fn as_str(self) -> &'static str {
        match self {
            NoticeState::Pending => "pending",
            NoticeState::Delivered => "delivered",
            NoticeState::Failed => "failed",
            NoticeState::Superseded => "superseded",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NoticeQuery {
    /// Only notices in this state; absent: all.
    pub state: Option<NoticeState>,
    /// At most this many, newest first (1 to 100, default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// An operator: the tenant whose notices to read (required). A member: its own.
    #[allow(dead_code)] // Read by the `Reader` extractor; here for the document and the
    // unknown-field check.
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// Whether the webhook answered 2xx.
    pub delivered: bool,
    /// The `webhook-id` the test event was sent with.
    pub webhook_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Sets the dead-letter webhook: each time a run of this tenant goes dead, a `run.dead` event
/// is POSTed to `url`, signed with Standard Webhooks (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature`), through the outbound gate under the tenant's host policy, retried
/// for about 16 hours. The first save, a given `secret` or `rotate_secret` sets the signing
/// secret, returned this once (201 when the webhook is new). Admin. Audited.
#[utoipa::path(put, path = "/v1/dead-letters/webhook", tag = "runs", request_body = PutWebhook,
    responses((status = 200, body = Webhook), (status = 201, body = Webhook),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 409, response = problem::Conflict),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType), (status = 422, response = problem::Unprocessable),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn put(
    State(state): State<AppState>,
    caller: Member<at_least::Admin>,
    Json(body): Json<PutWebhook>,
) -> Result<(StatusCode, Json<Webhook>), ApiError> {
    let spec = HookSpec {
        url: body.url,
        secret: body.secret,
        rotate_secret: body.rotate_secret,
        overlap_seconds: body.overlap_seconds,
    };
    let (view, created) = state
        .runs()
        .put_dead_letter_hook(&caller.tenant_id(), spec)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view.into())))
}

/// The dead-letter webhook (never its secret) and how its notices stand. 404 when none is set.
#[utoipa::path(get, path = "/v1/dead-letters/webhook", tag = "runs", params(TenantQuery),
    responses((status = 200, body = Webhook),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 422, response = problem::Unprocessable), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn show(State(state): State<AppState>, caller: Reader) -> Result<Json<Webhook>, ApiError> {
    let tenant = TenantId::new(caller.tenant());
    Ok(Json(state.runs().dead_letter_hook(&tenant).await?.into()))
}

/// Removes the dead-letter webhook; notices not yet delivered fail. Admin. Audited.
#[utoipa::path(delete, path = "/v1/dead-letters/webhook", tag = "runs",
    responses((status = 204, description = "removed"),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn remove(
    State(state): State<AppState>,
    caller: Member<at_least::Admin>,
) -> Result<StatusCode, ApiError> {
    state
        .runs()
        .delete_dead_letter_hook(&caller.tenant_id())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The notices of dead runs, newest first, with each one's state, attempts and last error.
#[utoipa::path(get, path = "/v1/dead-letters/webhook/notices", tag = "runs", params(NoticeQuery),
    responses((status = 200, body = NoticeList),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 422, response = problem::Unprocessable),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn notices(
    State(state): State<AppState>,
    caller: Reader,
    Query(query): Query<NoticeQuery>,
) -> Result<Json<NoticeList>, ApiError> {
    let tenant = TenantId::new(caller.tenant());
    let listed = state
        .runs()
        .dead_letter_notices(
            &tenant,
            query.state.map(NoticeState::as_str),
            query.limit.unwrap_or(50),
        )
        .await?;
    Ok(Json(NoticeList {
        notices: listed.into_iter().map(Notice::from).collect(),
    }))
}

/// Sends a `run.dead.test` event to the webhook now, signed as every notice is, and says
/// what the webhook answered. Nothing is stored or retried. Editor; at most 6 a minute.
#[utoipa::path(post, path = "/v1/dead-letters/webhook/test", tag = "runs",
    responses((status = 200, body = TestResult),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 429, response = problem::TooManyRequests), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn test(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
) -> Result<Json<TestResult>, ApiError> {
    let sent = state
        .runs()
        .test_dead_letter_hook(&caller.tenant_id(), state.notice_options())
        .await?;
    Ok(Json(TestResult {
        delivered: sent.error.is_none(),
        webhook_id: sent.id,
        status: sent.status,
        error: sent.error,
    }))
}
