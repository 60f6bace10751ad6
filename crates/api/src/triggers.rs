//! Triggers: webhook and cron triggers of a workflow (`/v1/workflows/{id}/triggers`,
//! `/v1/triggers/...`), and the public hook endpoint (`POST /hooks/{id}`), which takes no
//! token: the request's signature is its authentication.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{Member, at_least};
use super::error::{ApiError, Json};
use super::openapi::problem;
use super::trace::RequestTrace;
use airlock_model::Predicate;
use airlock_runs::{HookError, Overlap, Trigger as SavedTrigger, TriggerSpec, WithSecret};
use airlock_secrets::Secret;
use airlock_telemetry::{Metrics, WebhookOutcome};
use airlock_triggers::schedule::MissedTicks;
use airlock_triggers::webhook::Scheme;

/// The largest webhook body accepted. GitHub caps its payloads at 25 MB, but an
/// integration's events are far smaller, and the run keeps the body twice (raw, and parsed
/// when it is JSON) in its input, which every read of the run returns.
pub const MAX_HOOK_BODY: usize = 256 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/workflows/{id}/triggers", post(create))
        .route("/triggers", get(list))
        .route("/triggers/{id}", get(show).delete(remove))
        .route("/triggers/{id}/pause", post(pause))
        .route("/triggers/{id}/resume", post(resume))
        .route("/triggers/{id}/rotate-secret", post(rotate))
}

/// `/hooks/{id}`, outside `/v1` and without a token.
pub fn hook_routes() -> Router<AppState> {
    Router::new().route(
        "/hooks/{id}",
        post(receive).layer(DefaultBodyLimit::max(MAX_HOOK_BODY)),
    )
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Webhook,
    Cron,
}

/// A new trigger. `kind: webhook` takes `scheme`, `secret`, `rate_per_minute`; `kind: cron`
/// takes `expression`, `time_zone`, `missed_ticks`, `missed_cap`, `overlap`. A field of the
/// other kind is refused (so the example is one whole trigger, not an example per field:
/// those would add up to a body with both kinds' fields).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"kind": "cron", "expression": "*/5 * * * *", "time_zone": "Europe/Berlin"}))]
pub struct CreateTrigger {
    pub kind: TriggerKind,
    /// Webhook: `standard_webhooks` (default), `github` or `stripe`.
    #[schema(value_type = Option<String>)]
    pub scheme: Option<String>,
    /// Webhook: the signing secret, when the sender made it (required for `stripe`);
    /// absent: the server generates one and returns it this once.
    #[schema(value_type = Option<String>, max_length = 256)]
    pub secret: Option<Secret>,
    /// Webhook: deliveries accepted a minute (default 6,000).
    #[schema(minimum = 1, maximum = 600000)]
    pub rate_per_minute: Option<u32>,
    /// Cron: 5 fields (minute hour day-of-month month day-of-week) or 6 (a leading seconds
    /// field).
    #[schema(max_length = 200)]
    pub expression: Option<String>,
    /// Cron: an IANA time zone (default `UTC`); daylight-saving changes follow it.
    pub time_zone: Option<String>,
    /// Cron: ticks due while no process ran: `skip`, `latest` (default: fire once for the
    /// most recent), or `all` (up to `missed_cap`).
    #[schema(value_type = Option<String>)]
    pub missed_ticks: Option<MissedTicks>,
    /// Cron: the most late ticks `all` fires (default 10, at most 1,000).
    #[schema(minimum = 1, maximum = 1000)]
    pub missed_cap: Option<u32>,
    /// Cron: `allow` (default) or `skip`: no new run while the previous one is going.
    #[schema(value_type = Option<String>)]
    pub overlap: Option<Overlap>,
    /// Webhook: a predicate (docs/api.md, "Conditions") a delivery must match to create a
    /// run, over `/trigger/...` (the run's input, and `/trigger/headers/<name>`). One that
    /// does not is answered 202 with `filtered: true`: no run, nothing charged.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret when the sender makes it (Stripe); absent: generated.
    #[schema(value_type = Option<String>, max_length = 256)]
    pub secret: Option<Secret>,
    /// How long the previous secret keeps verifying (default 86,400; 0: not at all).
    #[schema(maximum = 604800)]
    pub overlap_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDetails {
    /// Where the sender posts, relative to this server's base URL.
    pub url: String,
    pub scheme: String,
    pub rate_per_minute: i64,
    /// Until when the secret before the last rotation still verifies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_until_ms: Option<i64>,
    /// Deliveries refused by verification, counted by the process that answered this
    /// request since it started (a refused delivery is written nowhere).
    pub rejected_deliveries_here: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CronDetails {
    pub expression: String,
    pub time_zone: String,
    pub missed_ticks: String,
    pub missed_cap: i64,
    pub overlap: String,
    /// The next fire times (unix ms), none while paused.
    pub next_fire_times_ms: Vec<i64>,
    /// Ticks that created a run.
    pub fired: i64,
    /// Late ticks the missed-ticks policy dropped.
    pub missed: i64,
    /// Ticks skipped because the previous run was still going (`overlap: skip`).
    pub skipped: i64,
    /// Ticks refused by the tenant's quotas or a full queue.
    pub refused: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fired_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Trigger {
    pub id: String,
    pub workflow_id: String,
    pub kind: TriggerKind,
    pub paused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronDetails>,
    /// The signing secret: only in the answer to creating the trigger or rotating it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The predicate a delivery must match to create a run.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<SavedTrigger> for Trigger {
    fn from(saved: SavedTrigger) -> Self {
        let r = saved.record;
        let kind = if r.kind == "cron" {
            TriggerKind::Cron
        } else {
            TriggerKind::Webhook
        };
        let webhook = (kind == TriggerKind::Webhook).then(|| WebhookDetails {
            url: format!("/hooks/{}", r.id),
            scheme: r.scheme.clone().unwrap_or_default(),
            rate_per_minute: r.rate_per_minute.unwrap_or_default(),
            previous_secret_until_ms: r.previous_until,
            rejected_deliveries_here: saved.rejected_here,
        });
        let cron = (kind == TriggerKind::Cron).then(|| CronDetails {
            expression: r.expression.clone().unwrap_or_default(),
            time_zone: r.time_zone.clone().unwrap_or_default(),
            missed_ticks: r.missed_policy.clone().unwrap_or_default(),
            missed_cap: r.missed_cap.unwrap_or_default(),
            overlap: r.overlap.clone().unwrap_or_default(),
            next_fire_times_ms: saved.next_fire_times,
            fired: r.fired,
            missed: r.missed,
            skipped: r.skipped,
            refused: r.refused,
            last_fired_at_ms: r.last_fired_at,
            last_run_id: r.last_run_id.clone(),
        });
        Trigger {
            id: r.id,
            workflow_id: r.workflow_id,
            kind,
            paused: r.paused,
            webhook,
            cron,
            secret: None,
            filter: r
                .filter
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            created_at_ms: r.created_at,
            updated_at_ms: r.updated_at,
        }
    }
}

impl From<WithSecret> for Trigger {
    fn from(with: WithSecret) -> Self {
        Trigger {
            secret: with.secret.map(|s| s.expose().to_owned()),
            ..with.trigger.into()
        }
    }
}

impl CreateTrigger {
    fn into_spec(self) -> Result<TriggerSpec, ApiError> {
        let refuse = |field: &str, kind: &str| {
            ApiError::validation(
                field,
                format!("`{field}` does not apply to a {kind} trigger"),
            )
        };
        match self.kind {
            TriggerKind::Webhook => {
                for (field, set) in [
                    ("expression", self.expression.is_some()),
                    ("time_zone", self.time_zone.is_some()),
                    ("missed_ticks", self.missed_ticks.is_some()),
                    ("missed_cap", self.missed_cap.is_some()),
                    ("overlap", self.overlap.is_some()),
                ] {
                    if set {
                        return Err(refuse(field, "webhook"));
                    }
                }
                let scheme = match self.scheme.as_deref() {
                    None => Scheme::StandardWebhooks,
                    Some(name) => Scheme::parse(name).ok_or_else(|| {
                        ApiError::validation(
                            "scheme",
                            "one of `standard_webhooks`, `github`, `stripe`",
                        )
                    })?,
                };
                Ok(TriggerSpec::Webhook {
                    scheme,
                    secret: self.secret,
                    rate_per_minute: self.rate_per_minute,
                })
            }
            TriggerKind::Cron => {
                for (field, set) in [
                    ("scheme", self.scheme.is_some()),
                    ("secret", self.secret.is_some()),
                    ("rate_per_minute", self.rate_per_minute.is_some()),
                ] {
                    if set {
                        return Err(refuse(field, "cron"));
                    }
                }
                let expression = self.expression.ok_or_else(|| {
                    ApiError::validation("expression", "a cron trigger needs an expression")
                })?;
                Ok(TriggerSpec::Cron {
                    expression,
                    time_zone: self.time_zone.unwrap_or_else(|| "UTC".into()),
                    missed_ticks: self.missed_ticks.unwrap_or_default(),
                    missed_cap: self.missed_cap,
                    overlap: self.overlap.unwrap_or_default(),
                })
            }
        }
    }
}

/// Creates a webhook or cron trigger of the workflow (201). A webhook trigger's answer
/// holds its signing secret, this once. At most 100 live triggers per tenant (429
/// `quota-exceeded`, `quota`: `max_triggers`).
#[utoipa::path(post, path = "/v1/workflows/{id}/triggers", tag = "triggers",
    params(("id" = String, Path)), request_body = CreateTrigger,
    responses((status = 201, body = Trigger),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType), (status = 422, response = problem::Unprocessable),
        (status = 429, response = problem::TooManyRequests), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(workflow_id): Path<String>,
    Json(body): Json<CreateTrigger>,
) -> Result<(StatusCode, Json<Trigger>), ApiError> {
    let tenant = caller.tenant_id();
    let filter = body
        .filter
        .as_ref()
        .map(|source| {
            Predicate::parse(source)
                .map_err(|e| ApiError::validation(format!("filter{}", e.path), e.reason))
        })
        .transpose()?;
    let spec = body.into_spec()?;
    let created = state
        .runs()
        .create_trigger(&tenant, &workflow_id, spec, filter.as_ref())
        .await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TriggerFilter {
    /// Only this workflow's triggers.
    pub workflow_id: Option<String>,
}

/// The tenant's triggers, oldest first.
#[utoipa::path(get, path = "/v1/triggers", tag = "triggers", params(TriggerFilter),
    responses((status = 200, body = Vec<Trigger>),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    caller: Member<at_least::Viewer>,
    Query(filter): Query<TriggerFilter>,
) -> Result<Json<Vec<Trigger>>, ApiError> {
    let tenant = caller.tenant_id();
    let triggers = state
        .runs()
        .list_triggers(&tenant, filter.workflow_id.as_deref())
        .await?;
    Ok(Json(triggers.into_iter().map(Trigger::from).collect()))
}

/// One trigger: a webhook's URL, a cron trigger's next fire times and tick counts.
#[utoipa::path(get, path = "/v1/triggers/{id}", tag = "triggers", params(("id" = String, Path)),
    responses((status = 200, body = Trigger),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized), (status = 403, response = problem::Forbidden),
        (status = 404, response = problem::NotFound), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn show(
    State(state): State<AppState>,
    caller: Member<at_least::Viewer>,
    Path(id): Path<String>,
) -> Result<Json<Trigger>, ApiError> {
    let tenant = caller.tenant_id();
    Ok(Json(state.runs().trigger(&tenant, &id).await?.into()))
}

/// Pauses a trigger: no tick fires, deliveries are refused (409) after verification.
#[utoipa::path(post, path = "/v1/triggers/{id}/pause", tag = "triggers", params(("id" = String, Path)),
    responses((status = 200, body = Trigger),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized), (status = 403, response = problem::Forbidden),
        (status = 404, response = problem::NotFound), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn pause(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(id): Path<String>,
) -> Result<Json<Trigger>, ApiError> {
    let tenant = caller.tenant_id();
    Ok(Json(
        state.runs().set_paused(&tenant, &id, true).await?.into(),
    ))
}

/// Resumes a trigger. A cron trigger fires from its next tick after now; the ticks of the
/// pause are not caught up.
#[utoipa::path(post, path = "/v1/triggers/{id}/resume", tag = "triggers", params(("id" = String, Path)),
    responses((status = 200, body = Trigger),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized), (status = 403, response = problem::Forbidden),
        (status = 404, response = problem::NotFound), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn resume(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(id): Path<String>,
) -> Result<Json<Trigger>, ApiError> {
    let tenant = caller.tenant_id();
    Ok(Json(
        state.runs().set_paused(&tenant, &id, false).await?.into(),
    ))
}

/// Gives a webhook trigger a new signing secret, returned this once; the previous one keeps
/// verifying for `overlap_seconds`.
#[utoipa::path(post, path = "/v1/triggers/{id}/rotate-secret", tag = "triggers",
    params(("id" = String, Path)), request_body = RotateSecret,
    responses((status = 200, body = Trigger),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict), (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType), (status = 422, response = problem::Unprocessable),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn rotate(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(id): Path<String>,
    Json(body): Json<RotateSecret>,
) -> Result<Json<Trigger>, ApiError> {
    let tenant = caller.tenant_id();
    let rotated = state
        .runs()
        .rotate_secret(&tenant, &id, body.secret, body.overlap_seconds)
        .await?;
    Ok(Json(rotated.into()))
}

/// Deletes a trigger: it stops in every process within one poll interval.
#[utoipa::path(delete, path = "/v1/triggers/{id}", tag = "triggers", params(("id" = String, Path)),
    responses((status = 204, description = "deleted"),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized), (status = 403, response = problem::Forbidden),
        (status = 404, response = problem::NotFound), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn remove(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant_id();
    state.runs().delete_trigger(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HookReceipt {
    /// The run the delivery created (or an earlier delivery with its id did); `null` when
    /// the trigger's filter did not match it.
    pub run_id: Option<String>,
    /// `true` when an earlier delivery with this id made the run (nothing new was started).
    pub duplicate: bool,
    /// `true` when the trigger's filter did not match: acknowledged, no run, nothing charged.
    pub filtered: bool,
}

/// Receives a webhook delivery. No token: the signature is checked against the trigger's
/// secret (Standard Webhooks `webhook-id`/`webhook-timestamp`/`webhook-signature`, GitHub
/// `X-Hub-Signature-256`, or Stripe `Stripe-Signature`, by the trigger's scheme) before
/// anything is stored. 202 with the new run; 200 with the same run for a redelivery (the
/// delivery id is the run's idempotency key); 401 `invalid-signature`; 409 while paused;
/// 429 past the trigger's rate or the tenant's `runs_per_hour`.
#[utoipa::path(post, path = "/hooks/{id}", tag = "triggers", params(("id" = String, Path)),
    request_body(content = Vec<u8>, description = "the sender's payload, verified byte for byte", content_type = "*/*"),
    responses((status = 202, body = HookReceipt), (status = 200, body = HookReceipt),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::BadSignature), (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict), (status = 413, response = problem::PayloadTooLarge),
        (status = 429, response = problem::TooManyRequests), (status = 503, response = problem::Unavailable)))]
async fn receive(
    State(state): State<AppState>,
    Path(id): Path<String>,
    trace: RequestTrace,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<HookReceipt>), ApiError> {
    let metrics = state.runtime().metrics();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let outcome = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                WebhookOutcome::TooLarge
            } else {
                WebhookOutcome::Refused
            };
            refused(metrics, &id, outcome, &rejection.body_text());
            return Err(ApiError::from(rejection));
        }
    };
    let now_s = airlock_store::now_ms() / 1000;
    let delivered = match state
        .runs()
        .receive_hook(&id, &headers, &body, now_s, &trace.0)
        .await
    {
        Ok(delivered) => delivered,
        Err(error) => {
            let outcome = match &error {
                HookError::NotFound => WebhookOutcome::Unknown,
                HookError::Unverified(_) => WebhookOutcome::InvalidSignature,
                HookError::Paused => WebhookOutcome::Paused,
                HookError::RateLimited { .. } => WebhookOutcome::RateLimited,
                HookError::Runs(_) => WebhookOutcome::Refused,
            };
            refused(metrics, &id, outcome, &error.to_string());
            return Err(error.into());
        }
    };
    metrics.webhook(match (&delivered.run, delivered.created) {
        (None, _) => WebhookOutcome::Filtered,
        (Some(_), true) => WebhookOutcome::Accepted,
        (Some(_), false) => WebhookOutcome::Duplicate,
    });
    let status = if delivered.created || delivered.run.is_none() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(HookReceipt {
            duplicate: !delivered.created && delivered.run.is_some(),
            filtered: delivered.run.is_none(),
            run_id: delivered.run.map(|run| run.id),
        }),
    ))
}

/// Counts a refused delivery and logs it, a few lines a second at most: anyone can post to
/// a hook, so a flood must not fill the disk.
fn refused(metrics: &Metrics, trigger: &str, outcome: WebhookOutcome, reason: &str) {
    metrics.webhook(outcome);
    if let Some(held_back) = metrics.refusal_log() {
        // The id is the path's, from anyone: bounded, so the line is too.
        let trigger: String = trigger.chars().take(64).collect();
        tracing::info!(
            trigger,
            outcome = outcome.as_str(),
            reason,
            held_back,
            "webhook refused"
        );
    }
}
