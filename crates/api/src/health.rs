//! `/healthz` (the process answers) and `/readyz` (the database answers, every migration
//! this build knows is applied, and the run queue is under its depth threshold), and
//! `/openapi.json`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, Json};
use super::openapi::problem;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    /// `/readyz`: runs waiting in the queue, every tenant (refused with 503 `queue-full`
    /// past the operator's threshold).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub queue_depth: Option<i64>,
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        queue_depth: None,
    })
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, response = problem::Unavailable)))]
async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, Json<Health>), ApiError> {
    state.store().ready().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready");
        ApiError::Unavailable
    })?;
    let depth = state.runs().queue_ready().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready");
        ApiError::from(e)
    })?;
    Ok((
        StatusCode::OK,
        Json(Health {
            status: "ready",
            queue_depth: Some(depth),
        }),
    ))
}

#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "this document")))]
async fn openapi_json(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi::document(state.caps()))
}
