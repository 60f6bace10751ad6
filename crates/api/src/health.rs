//! `/healthz` (the process answers) and `/readyz` (the database answers and every migration
//! this build knows is applied), and `/openapi.json`.

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
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, response = problem::Unavailable)))]
async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, Json<Health>), ApiError> {
    state.store().ready().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready");
        ApiError::Unavailable
    })?;
    Ok((StatusCode::OK, Json(Health { status: "ready" })))
}

#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "this document")))]
async fn openapi_json(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi::document(state.caps()))
}
