//! `/healthz` (the process answers) and `/readyz` (the database answers, every migration
//! this build knows is applied, the store's background tasks run, and the run queue is under
//! its depth threshold; otherwise 503 with `ready: false` and a `reason`), and
//! `/openapi.json`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use airlock_store::StoreError;

use super::AppState;
use super::error::{ApiError, Json};
use super::openapi::problem;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
}

/// `/readyz`'s reason while the database does not answer.
const UNREACHABLE: &str = "database unreachable";

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

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
    let depth = readiness(&state).await?;
    Ok((
        StatusCode::OK,
        Json(Health {
            status: "ready",
            queue_depth: Some(depth),
        }),
    ))
}

/// `/readyz`'s checks (also the `airlock_ready` gauge): the queue depth when ready.
pub(crate) async fn readiness(state: &AppState) -> Result<i64, ApiError> {
    let store = state.store();
    if let Some(reason) = store.stopped_task() {
        tracing::warn!(reason, "not ready");
        return Err(ApiError::NotReady { reason });
    }
    // The breaker already knows: no query (it would fail at once anyway).
    if store.unreachable() {
        return Err(ApiError::NotReady {
            reason: UNREACHABLE,
        });
    }
    // A database that does not answer must not hang the probe (the pool's acquire timeout
    // bounds it on PostgreSQL, but not every wait is an acquire).
    match tokio::time::timeout(READY_TIMEOUT, store.ready()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            return Err(ApiError::NotReady {
                reason: match e {
                    StoreError::Migrate(_) => "migrations not applied",
                    _ => UNREACHABLE,
                },
            });
        }
        Err(_) => {
            tracing::warn!("not ready: the database did not answer within {READY_TIMEOUT:?}");
            return Err(ApiError::NotReady {
                reason: UNREACHABLE,
            });
        }
    }
    let depth = match tokio::time::timeout(READY_TIMEOUT, state.runs().queue_ready()).await {
        Ok(depth) => depth.map_err(|e| {
            tracing::warn!(error = %e, "not ready");
            ApiError::from(e)
        })?,
        Err(_) => {
            return Err(ApiError::NotReady {
                reason: UNREACHABLE,
            });
        }
    };
    Ok(depth)
}

#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "this document")))]
async fn openapi_json(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi::document(state.caps()))
}
