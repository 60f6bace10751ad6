//! The platform's shared connector catalog: the operator publishes connector versions
//! (components and declarative definitions) once, for every tenant; any token reads it. A
//! tenant uses a shared connector by name and version as if it had uploaded it (workflows,
//! connections, invocations), unless it has a connector of that name itself: its own wins
//! inside it. A shared version's deprecation reaches every tenant (within a second in other
//! processes). Limits and credentials stay the tenant's: a connection is always a tenant's.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

use super::AppState;
use super::auth::{Operator, Principal};
use super::connectors::{
    ComponentBytes, ConnectorSummary, ConnectorVersion, DefinitionDocument, DefinitionText,
    set_deprecated, store_upload, summarize,
};
use super::error::{ApiError, Json};
use super::openapi::problem;
use airlock_store::CATALOG;

pub fn routes(upload_limit: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/catalog/connectors",
            get(list)
                .post(publish)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/catalog/connectors/{name}/versions/{version}", get(show))
        .route(
            "/catalog/connectors/{name}/versions/{version}/deprecate",
            post(deprecate),
        )
        .route(
            "/catalog/connectors/{name}/versions/{version}/undeprecate",
            post(undeprecate),
        )
}

/// Publishes a connector version for every tenant (operator): the body as for
/// `POST /v1/connectors`, with the same answers.
#[utoipa::path(post, path = "/v1/catalog/connectors", tag = "catalog",
    request_body(description = "a WebAssembly component, or a declarative definition (docs/declarative.md) as JSON or YAML",
        content((ComponentBytes = "application/wasm"), (DefinitionDocument = "application/json"), (DefinitionText = "application/yaml"))),
    responses(
        (status = 201, description = "a new shared version", body = ConnectorVersion),
        (status = 200, description = "the same bytes were already this version", body = ConnectorVersion),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 409, response = problem::Conflict),
        (status = 413, response = problem::PayloadTooLarge), (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable), (status = 429, response = problem::TooManyRequests),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn publish(
    State(state): State<AppState>,
    _operator: Operator,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<ConnectorVersion>), ApiError> {
    store_upload(&state, CATALOG, &headers, body).await
}

/// The shared connectors and their versions (any token).
#[utoipa::path(get, path = "/v1/catalog/connectors", tag = "catalog",
    responses((status = 200, body = Vec<ConnectorSummary>),
        (status = 401, response = problem::Unauthorized), (status = 403, response = problem::Forbidden),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    _caller: Principal,
) -> Result<Json<Vec<ConnectorSummary>>, ApiError> {
    let summaries = state.store().list_connectors(CATALOG).await?;
    Ok(Json(summarize(summaries)))
}

/// One shared version, with its manifest (any token).
#[utoipa::path(get, path = "/v1/catalog/connectors/{name}/versions/{version}", tag = "catalog",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = ConnectorVersion),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn show(
    State(state): State<AppState>,
    _caller: Principal,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ConnectorVersion>, ApiError> {
    let record = state
        .store()
        .connector_version(CATALOG, &name, &version)
        .await
        .map_err(ApiError::or_not_found("connector version"))?;
    Ok(Json(record.into()))
}

/// Deprecates a shared version for every tenant (operator).
#[utoipa::path(post, path = "/v1/catalog/connectors/{name}/versions/{version}/deprecate", tag = "catalog",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "the version, now deprecated in every tenant that uses the shared connector", body = ConnectorVersion),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn deprecate(
    State(state): State<AppState>,
    _operator: Operator,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ConnectorVersion>, ApiError> {
    set_deprecated(&state, CATALOG, &name, &version, true).await
}

#[utoipa::path(post, path = "/v1/catalog/connectors/{name}/versions/{version}/undeprecate", tag = "catalog",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "the version, no longer deprecated", body = ConnectorVersion),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn undeprecate(
    State(state): State<AppState>,
    _operator: Operator,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ConnectorVersion>, ApiError> {
    set_deprecated(&state, CATALOG, &name, &version, false).await
}
