//! Access history: which token subject called which route, and when (`GET /v1/access`).
//!
//! Every authenticated `/v1` call is counted in memory per tenant, minute, subject, method
//! and route template, and flushed to the database every few seconds (and at shutdown), so a
//! busy tenant adds one row per subject, route and minute rather than one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{Principal, Reader, Role};
use super::error::{ApiError, Json};
use super::openapi::problem;
use airlock_store::AccessMinute;

/// Distinct (tenant, minute, subject, method, route) kept between flushes; calls past it
/// are counted as dropped rather than growing memory without bound.
const MAX_KEYS: usize = 50_000;

/// How often the counts are written.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(5);

type Key = (String, i64, String, String, String);

/// Calls counted since the last flush.
#[derive(Debug, Default)]
pub(crate) struct AccessLog {
    counts: Mutex<HashMap<Key, (i64, i64)>>,
}

/// Filled by the [`Principal`] extractor when a handler authenticates the call, so the
/// middleware learns who called without verifying the token a second time.
#[derive(Debug, Clone, Default)]
pub(crate) struct PrincipalSlot(pub Arc<OnceLock<Principal>>);

impl AccessLog {
    fn record(&self, key: Key, failed: bool) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() >= MAX_KEYS && !counts.contains_key(&key) {
            tracing::warn!("access history: too many distinct calls between flushes; one dropped");
            return;
        }
        let entry = counts.entry(key).or_default();
        entry.0 += 1;
        entry.1 += i64::from(failed);
    }

    fn take(&self) -> Vec<AccessMinute> {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        counts
            .into_iter()
            .map(
                |((tenant_id, minute, subject, method, route), (calls, errors))| AccessMinute {
                    tenant_id,
                    minute,
                    subject,
                    method,
                    route,
                    calls,
                    errors,
                },
            )
            .collect()
    }

    /// Writes what was counted; on failure the counts go back for the next flush.
    pub(crate) async fn flush(&self, store: &airlock_store::Store) {
        let rows = self.take();
        if rows.is_empty() {
            return;
        }
        if let Err(error) = store.record_access(&rows).await {
            tracing::warn!(%error, rows = rows.len(), "access history: a flush failed; retried with the next");
            for row in rows {
                let key = (
                    row.tenant_id,
                    row.minute,
                    row.subject,
                    row.method,
                    row.route,
                );
                let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
                let entry = counts.entry(key).or_default();
                entry.0 += row.calls;
                entry.1 += row.errors;
            }
        }
    }
}

/// Flushes every [`FLUSH_EVERY`] until `stop`, then once more.
pub(crate) async fn flush_until(state: AppState, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(FLUSH_EVERY) => {}
        }
        state.access().flush(state.store()).await;
    }
    state.access().flush(state.store()).await;
}

/// Counts the call under its caller, once the handler has authenticated it.
pub(crate) async fn track(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .filter(|r| r.starts_with("/v1/"));
    let Some(route) = route else {
        return next.run(request).await;
    };
    let method = request.method().as_str().to_owned();
    let slot = PrincipalSlot::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    // Operators' calls are not a tenant's: what they change is in the audit log.
    if let Some(principal) = slot.0.get()
        && let Some(tenant) = principal.tenant.clone()
    {
        let minute = airlock_store::now_ms().div_euclid(60_000);
        state.access().record(
            (tenant, minute, principal.subject.clone(), method, route),
            response.status().as_u16() >= 400,
        );
    }
    response
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/access", get(history))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccessQuery {
    /// Newest minute first, 1-1000 rows (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// An operator: the tenant to read (required). An admin: its own (the default); another
    /// is 404.
    #[allow(dead_code)] // Read by the `Reader` extractor; here for the document.
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessEntry {
    /// The minute, as ms since the unix epoch.
    pub minute_ms: i64,
    /// The token's subject.
    pub subject: String,
    pub method: String,
    /// The route template.
    pub route: String,
    pub calls: i64,
    /// Calls answered 400 or above.
    pub errors: i64,
}

/// Which token subject called which route, per minute, newest first: the tenant's admins,
/// or an operator with `?tenant=`. Written every few seconds; kept `retain_access_days`.
#[utoipa::path(get, path = "/v1/access", tag = "audit", params(AccessQuery),
    responses((status = 200, body = Vec<AccessEntry>),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 422, response = problem::Unprocessable), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn history(
    State(state): State<AppState>,
    caller: Reader,
    Query(query): Query<AccessQuery>,
) -> Result<Json<Vec<AccessEntry>>, ApiError> {
    if caller.principal.tenant.is_some() {
        caller.principal.tenant(Role::Admin)?;
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit", "limit is 1-1000"));
    }
    let rows = state.store().access_history(caller.tenant(), limit).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| AccessEntry {
                minute_ms: row.minute.saturating_mul(60_000),
                subject: row.subject,
                method: row.method,
                route: row.route,
                calls: row.calls,
                errors: row.errors,
            })
            .collect(),
    ))
}
