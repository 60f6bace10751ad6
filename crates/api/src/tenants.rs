//! Tenants (operator) and their limits: `POST/GET /v1/tenants`, `GET /v1/tenants/{id}`
//! (and `DELETE`, with the rest of the lifecycle in `lifecycle.rs`),
//! `GET/PUT /v1/tenants/{id}/limits`. Limits are read on every invocation (cached for at
//! most a second, and dropped at once by a `PUT` through this process), so a `PUT` applies
//! to the next one without a restart.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Operator, Principal};
use super::error::{ApiError, Json};
use super::openapi::problem;
use airlock_model::TenantQuota;
use airlock_store::TenantRecord;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tenants", get(list).post(create))
        .route("/tenants/{id}", get(show).delete(super::lifecycle::delete))
        .route(
            "/tenants/{id}/limits",
            get(show_limits).put(put_limits).patch(patch_limits),
        )
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1-64 characters of `a-z`, `0-9`, `-`, `_`, the first a letter or digit; generated when
    /// absent or null.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub id: Option<String>,
    /// 1-200 characters, not all whitespace (leading and trailing whitespace is dropped).
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// When the operator suspended it (unix milliseconds); null while it is active.
    pub suspended_at_ms: Option<i64>,
}

impl From<TenantRecord> for Tenant {
    fn from(record: TenantRecord) -> Self {
        Tenant {
            id: record.id,
            name: record.name,
            created_at_ms: record.created_at,
            suspended_at_ms: record.suspended_at,
        }
    }
}

/// A tenant's limits as one flat object: the runtime's per-invocation limits (see
/// `docs/limits.md`) plus the service's counts. In a `PUT`, fields left out take their
/// defaults (null is not a value: leave the field out); each value is checked against its cap.
/// The server reads and writes [`TenantQuota`]; this type is its OpenAPI form only.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub fuel: u64,
    pub memory_bytes: u64,
    pub timeout_ms: u64,
    pub max_requests: u32,
    pub max_request_body_bytes: u64,
    pub max_response_body_bytes: u64,
    pub max_total_bytes_out: u64,
    pub max_total_bytes_in: u64,
    pub request_timeout_ms: u64,
    pub max_input_bytes: u64,
    pub max_output_bytes: u64,
    pub max_log_bytes: u64,
    /// Default 1,000, cap 100,000.
    pub max_log_lines: u32,
    pub max_state_value_bytes: u64,
    pub max_state_keys: u32,
    /// Invocations of the tenant running at once; default 16, cap 256 (the pool bounds it).
    pub max_concurrent_runs: u32,
    /// Host patterns: `*`, a host name or IP address, or `*.` and a domain.
    pub allowed_hosts: Vec<String>,
    /// Default 50, cap 200.
    pub max_workflows: u32,
    /// Default 100, cap 500; over it, invocations answer 429.
    pub runs_per_hour: u32,
    /// Days an ended run keeps its input, outputs and logs; default 30, 1 to 3,650.
    pub retain_run_data_days: u32,
    /// Days an ended run is kept at all; default 90, 1 to 3,650.
    pub retain_runs_days: u32,
    /// Days the access history is kept; default 90, 1 to 3,650.
    pub retain_access_days: u32,
    /// Days an audit record is kept; default 365, 1 to 3,650. Pruning removes the oldest
    /// records of the tenant's chain and appends an `audit.pruned` record saying how far.
    pub retain_audit_days: u32,
    /// Items one `for_each` step may iterate over; default 1,000, 1 to 10,000. More fails
    /// the step (`too_many_items`).
    pub max_iterations: u32,
}

pub fn valid_tenant_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Creates a tenant (operator). 409 when the id is taken.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = Tenant),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 409, response = problem::Conflict),
        (status = 413, response = problem::PayloadTooLarge), (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    _operator: Operator,
    Json(body): Json<CreateTenant>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    let id = body
        .id
        .unwrap_or_else(|| format!("t-{}", uuid::Uuid::new_v4().simple()));
    if !valid_tenant_id(&id) {
        return Err(ApiError::validation(
            "id",
            "a tenant id is 1-64 characters of a-z, 0-9, '-' and '_'",
        ));
    }
    let name = super::names::check_name(&body.name, "tenant")?;
    let name = name.as_str();
    let record = state
        .store()
        .create_tenant(&id, name)
        .await
        .map_err(|e| match e {
            airlock_store::StoreError::Conflict => {
                ApiError::Conflict(format!("tenant `{id}` already exists"))
            }
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// Every tenant (operator).
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses((status = 200, body = Vec<Tenant>),
        (status = 401, response = problem::Unauthorized), (status = 403, response = problem::Forbidden),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<Vec<Tenant>>, ApiError> {
    let tenants = state.store().list_tenants().await?;
    Ok(Json(tenants.into_iter().map(Tenant::from).collect()))
}

/// One tenant: any for an operator, its own for a tenant's token (another tenant is 404).
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = Tenant),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 404, response = problem::NotFound), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    if !principal.can_read_tenant(&id) {
        return Err(ApiError::not_found("tenant"));
    }
    let record = state
        .store()
        .tenant(&id)
        .await
        .map_err(ApiError::or_not_found("tenant"))?;
    Ok(Json(record.into()))
}

/// A tenant's limits: any for an operator, its own for a tenant's token (another tenant is
/// 404).
#[utoipa::path(get, path = "/v1/tenants/{id}/limits", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = Limits),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 404, response = problem::NotFound), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn show_limits(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<TenantQuota>, ApiError> {
    if !principal.can_read_tenant(&id) {
        return Err(ApiError::not_found("tenant"));
    }
    let quota = state
        .store()
        .tenant_quota(&id)
        .await
        .map_err(ApiError::or_not_found("tenant"))?;
    Ok(Json(quota))
}

/// Replaces a tenant's limits (operator): a whole new set, so fields left out take their
/// defaults (`PATCH` changes some and keeps the rest). 422 when a value is invalid or above
/// its cap; `field` names it.
#[utoipa::path(put, path = "/v1/tenants/{id}/limits", tag = "tenants", params(("id" = String, Path)),
    request_body = Limits,
    responses((status = 200, body = Limits),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 413, response = problem::PayloadTooLarge), (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn put_limits(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<TenantQuota>, ApiError> {
    let quota = checked_limits(limits_object(body)?, state.caps())?;
    state.pipeline().set_tenant_quota(&id, &quota).await?;
    Ok(Json(quota))
}

/// The OpenAPI form of a `PATCH` of limits: `Limits` with every field also nullable, built
/// from it by `openapi::document` (this definition is replaced there).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // The document's only.
pub struct LimitsPatch(Limits);

/// Changes some of a tenant's limits (operator): fields given replace the stored ones, a
/// field given as null goes back to its default, fields left out keep their stored values.
/// The result is checked as a `PUT` is. 422 when a value is invalid or above its cap; `field`
/// names it.
#[utoipa::path(patch, path = "/v1/tenants/{id}/limits", tag = "tenants", params(("id" = String, Path)),
    request_body = LimitsPatch,
    responses((status = 200, body = Limits),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 413, response = problem::PayloadTooLarge), (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn patch_limits(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<TenantQuota>, ApiError> {
    let changes = limits_object(body)?;
    if !valid_tenant_id(&id) {
        return Err(ApiError::not_found("tenant"));
    }
    let caps = state.caps().clone();
    let merge = move |stored: TenantQuota| merge_limits(stored, changes, &caps);
    let quota = state.pipeline().change_tenant_quota(&id, merge).await??;
    Ok(Json(quota))
}

/// `stored` with `changes` applied (null: the field's default), checked against `caps`.
fn merge_limits(
    stored: TenantQuota,
    changes: serde_json::Map<String, Value>,
    caps: &airlock_model::LimitCaps,
) -> Result<TenantQuota, ApiError> {
    let (Ok(Value::Object(mut merged)), Ok(Value::Object(defaults))) = (
        serde_json::to_value(&stored),
        serde_json::to_value(TenantQuota::default()),
    ) else {
        return Err(ApiError::Internal);
    };
    for (field, value) in changes {
        let value = match value {
            Value::Null => match defaults.get(&field) {
                Some(default) => default.clone(),
                None => {
                    return Err(ApiError::validation(
                        field.clone(),
                        format!("`{field}` is not a limit"),
                    ));
                }
            },
            value => value,
        };
        merged.insert(field, value);
    }
    checked_limits(merged, caps)
}

/// A limits body: a JSON object (422 otherwise).
fn limits_object(body: Value) -> Result<serde_json::Map<String, Value>, ApiError> {
    match body {
        Value::Object(object) => Ok(object),
        _ => Err(ApiError::Validation {
            detail: "the limits must be a JSON object".into(),
            field: None,
        }),
    }
}

/// The limits `object` names (fields left out: their defaults), each within `caps`.
fn checked_limits(
    object: serde_json::Map<String, Value>,
    caps: &airlock_model::LimitCaps,
) -> Result<TenantQuota, ApiError> {
    let quota: TenantQuota =
        serde_json::from_value(Value::Object(object)).map_err(|e| ApiError::Validation {
            detail: format!("invalid limits: {e}"),
            field: None,
        })?;
    quota
        .validate(caps)
        .map_err(|e| ApiError::validation(e.field, e.to_string()))?;
    Ok(quota)
}
