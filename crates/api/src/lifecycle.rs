//! A tenant's lifecycle (operator): `POST /v1/tenants/{id}/suspend` and `.../resume`,
//! `GET /v1/tenants/{id}/export`, `DELETE /v1/tenants/{id}`.
//!
//! Suspending keeps every row and refuses the tenant everywhere within a second: its tokens
//! (403 `tenant-suspended`), its webhooks (503, so senders keep the delivery), its cron ticks
//! (refused, not kept for later), and its runs (not claimed; a run between steps goes back to
//! the queue). Deleting needs a suspended tenant and removes every row of it on both
//! databases, its audit chain included; the platform's chain keeps the deletion itself.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use super::audit::{AuditedInTx, RequestId};
use super::auth::Operator;
use super::error::{ApiError, Json};
use super::openapi::problem;
use super::tenants::{Tenant, valid_tenant_id};
use airlock_store::{AuditDraft, Column, LifecycleRefusal, Store, TENANT_TABLES};

/// Rows read per query while exporting.
const EXPORT_PAGE: i64 = 500;
/// The `format` of an export document; a change of its shape changes it.
pub const EXPORT_FORMAT: &str = "airlock.tenant-export.v1";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tenants/{id}/suspend", post(suspend))
        .route("/tenants/{id}/resume", post(resume))
        .route("/tenants/{id}/export", get(export))
}

fn known(id: &str) -> Result<(), ApiError> {
    if valid_tenant_id(id) {
        Ok(())
    } else {
        Err(ApiError::not_found("tenant"))
    }
}

/// Suspends a tenant (operator). Nothing is deleted; a second call keeps the first time.
#[utoipa::path(post, path = "/v1/tenants/{id}/suspend", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = Tenant),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn suspend(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    known(&id)?;
    let record = state.pipeline().suspend_tenant(&id).await?;
    tracing::info!(tenant = %id, "tenant suspended");
    Ok(Json(record.into()))
}

/// Resumes a suspended tenant (operator); resuming one that is not suspended changes nothing.
#[utoipa::path(post, path = "/v1/tenants/{id}/resume", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = Tenant),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn resume(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    known(&id)?;
    let record = state.pipeline().resume_tenant(&id).await?;
    tracing::info!(tenant = %id, "tenant resumed");
    Ok(Json(record.into()))
}

/// Deletes a suspended tenant (operator): every row of it, its audit chain included, and the
/// compiled code of components no other tenant holds. 409 when it is not suspended, or while
/// a run of it is still in a step it began before the suspension.
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 204, description = "deleted"),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    operator: Operator,
    request_id: Option<Extension<RequestId>>,
    Path(id): Path<String>,
) -> Result<(Extension<AuditedInTx>, StatusCode), ApiError> {
    known(&id)?;
    // The platform's record of the deletion commits with it: the tenant's own chain goes.
    let record = AuditDraft {
        tenant_id: String::new(),
        actor: operator.0.subject.clone(),
        action: "DELETE /v1/tenants/{id}".into(),
        target: id.clone(),
        request_id: request_id.map(|Extension(r)| r.0).unwrap_or_default(),
        detail: json!({"status": 204, "role": operator.0.role.as_str(), "params": {"id": id}}),
    };
    match state.pipeline().delete_tenant(&id, &record).await? {
        Ok(deleted) => {
            tracing::info!(tenant = %id, rows = deleted.rows, artifacts = deleted.orphaned_digests.len(), "tenant deleted");
            Ok((Extension(AuditedInTx), StatusCode::NO_CONTENT))
        }
        Err(refused @ (LifecycleRefusal::NotSuspended(_) | LifecycleRefusal::Running { .. })) => {
            Err(ApiError::Conflict(refused.to_string()))
        }
    }
}

/// Everything of a tenant as one JSON document (operator): its row and limits, then, per
/// table, its rows as objects — workflows and their versions, triggers, connections,
/// connectors, runs and their steps (those retention has kept), usage, access history and
/// the audit chain. Secrets are never in it: `withheld` names each column left out and why.
/// Streamed page by page; a failure mid-way ends the response early, so a truncated document
/// does not parse.
#[utoipa::path(get, path = "/v1/tenants/{id}/export", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, description = "the export document", content_type = "application/json", body = Object),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn export(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    known(&id)?;
    let tenant = state
        .store()
        .export_tenant_row(&id)
        .await
        .map_err(ApiError::or_not_found("tenant"))?;
    let withheld: serde_json::Map<String, Value> = TENANT_TABLES
        .iter()
        .flat_map(|table| {
            table.columns.iter().filter_map(move |column| match column {
                Column::Withheld(name, why) => {
                    Some((format!("{}.{name}", table.name), Value::from(*why)))
                }
                _ => None,
            })
        })
        .collect();
    let head = json!({
        "format": EXPORT_FORMAT,
        "exported_at_ms": airlock_store::now_ms(),
        "tenant": tenant,
        "withheld": withheld,
    });
    // The head's closing brace is replaced by the `tables` member, streamed.
    let mut head = head.to_string();
    head.pop();
    head.push_str(",\"tables\":{");
    let pages = Pages {
        store: state.store().clone(),
        tenant: id,
        table: 0,
        offset: 0,
        started: false,
    };
    let body = futures::stream::once(async move { Ok::<_, ApiError>(Bytes::from(head)) })
        .chain(futures::stream::try_unfold(pages, Pages::next));
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

use futures::StreamExt as _;

/// Where an export stream is: the table and the offset in it.
struct Pages {
    store: Store,
    tenant: String,
    table: usize,
    offset: i64,
    /// Whether the current table's array is open.
    started: bool,
}

impl Pages {
    /// The next chunk of the `tables` object, or `None` once it is closed.
    async fn next(mut self) -> Result<Option<(Bytes, Pages)>, ApiError> {
        let Some(table) = TENANT_TABLES.get(self.table) else {
            if self.table == TENANT_TABLES.len() {
                self.table += 1;
                return Ok(Some((Bytes::from_static(b"}}"), self)));
            }
            return Ok(None);
        };
        let mut chunk = String::new();
        if !self.started {
            if self.table > 0 {
                chunk.push(',');
            }
            chunk.push_str(&Value::from(table.name).to_string());
            chunk.push_str(":[");
            self.started = true;
        }
        let rows = self
            .store
            .export_page(&self.tenant, table, self.offset, EXPORT_PAGE)
            .await
            .inspect_err(|error| tracing::error!(%error, tenant = %self.tenant, table = table.name, "an export failed mid-way; the document is cut short"))?;
        for (i, row) in rows.iter().enumerate() {
            if self.offset > 0 || i > 0 {
                chunk.push(',');
            }
            chunk.push_str(&row.to_string());
        }
        let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) == EXPORT_PAGE;
        if full {
            self.offset += EXPORT_PAGE;
        } else {
            chunk.push(']');
            self.table += 1;
            self.offset = 0;
            self.started = false;
        }
        Ok(Some((Bytes::from(chunk), self)))
    }
}
