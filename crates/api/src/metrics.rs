//! `GET /metrics` (Prometheus, OpenMetrics text) and the middleware that counts every API
//! request by route template.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::auth::Operator;

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scrape waits for the database's figures (queue, readiness).
const SCRAPE_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// Who may read `/metrics` on the API listener. The figures name tenants, so by default only
/// an operator token reads them; `--metrics-listen` serves them on an address of their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricsExposure {
    /// An operator token is required.
    #[default]
    Operator,
    /// No token: for an API listener only a private network reaches.
    Public,
    /// Not served on the API listener (404).
    Off,
}

/// `/metrics` on the API listener, as `exposure` says.
pub(crate) fn routes(exposure: MetricsExposure) -> Router<AppState> {
    match exposure {
        MetricsExposure::Operator => Router::new().route("/metrics", get(for_operator)),
        MetricsExposure::Public => Router::new().route("/metrics", get(render)),
        MetricsExposure::Off => Router::new(),
    }
}

/// A listener of its own (`--metrics-listen`): `/metrics` and nothing else, no token.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn for_operator(_operator: Operator, state: State<AppState>) -> Response {
    render(state).await
}

async fn render(State(state): State<AppState>) -> Response {
    observe(&state).await;
    (
        [(CONTENT_TYPE, OPENMETRICS)],
        state.runtime().metrics().encode(),
    )
        .into_response()
}

/// Sets the gauges read at scrape: pool slots, database pool, queue, readiness.
async fn observe(state: &AppState) {
    let metrics = state.runtime().metrics();
    state.runtime().observe();
    let (in_use, idle, max) = state.store().pool_stats();
    metrics.set_db_pool(in_use, idle, max);
    if let Ok(Ok(waited)) =
        tokio::time::timeout(SCRAPE_DB_TIMEOUT, state.store().acquire_time()).await
    {
        metrics.db_acquire(waited);
    }
    let ready = tokio::time::timeout(SCRAPE_DB_TIMEOUT, super::health::readiness(state)).await;
    let depth = match ready {
        Ok(Ok(depth)) => {
            metrics.set_ready(true);
            Some(depth)
        }
        _ => {
            metrics.set_ready(false);
            None
        }
    };
    if let Some(depth) = depth {
        let now = airlock_store::now_ms();
        let oldest = tokio::time::timeout(SCRAPE_DB_TIMEOUT, state.store().oldest_due(now)).await;
        if let Ok(Ok(oldest)) = oldest {
            let age = oldest.map_or(0, |due| now.saturating_sub(due));
            metrics.set_queue(
                depth,
                Duration::from_millis(u64::try_from(age).unwrap_or(0)),
            );
        }
    }
}

/// Counts the request under its route template (`/v1/runs/{id}`, never the path itself, so
/// a client cannot mint series); requests no route matched count as `unmatched`.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    state.runtime().metrics().http_request(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
