//! Connectors: upload a component (`application/wasm`) or a declarative definition
//! (`application/json`, `application/yaml`), which the runtime validates and the store keeps
//! content-addressed; list; read a version's manifest; deprecate a version and undo that.
//! Versions are immutable: the same name and version with other bytes is a conflict.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Member, at_least};
use super::error::{ApiError, Json};
use super::openapi::problem;
use airlock_core::CoreError;
use airlock_core::definitions::{self, DefinitionTextError, Syntax};
use airlock_runtime::LoadError;
use airlock_store::{ConnectorRecord, PutOutcome, StoreError};

pub fn routes(upload_limit: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/connectors",
            get(list)
                .post(upload)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/connectors/{name}/versions/{version}", get(show))
        .route(
            "/connectors/{name}/versions/{version}/deprecate",
            post(deprecate),
        )
        .route(
            "/connectors/{name}/versions/{version}/undeprecate",
            post(undeprecate),
        )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorVersion {
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    pub size_bytes: i64,
    pub deprecated: bool,
    pub created_at_ms: i64,
    /// The manifest the component declared (see docs/manifest.md).
    #[schema(value_type = Object)]
    pub manifest: Value,
}

/// The bytes of a WebAssembly component: the upload body, declared as binary so that clients
/// and fuzzers send bytes (not a JSON array of integers).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ComponentBytes(#[allow(dead_code)] Vec<u8>);

/// A declarative definition as JSON (`schema/declarative.schema.json`).
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct DefinitionDocument(#[allow(dead_code)] Value);

/// A declarative definition as YAML text.
#[derive(ToSchema)]
#[schema(value_type = String)]
pub struct DefinitionText(#[allow(dead_code)] String);

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorSummary {
    pub name: String,
    /// The version invocations use when none is named: the newest not deprecated.
    pub current_version: Option<String>,
    /// Newest first.
    pub versions: Vec<VersionSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionSummary {
    pub version: String,
    pub digest: String,
    pub deprecated: bool,
    pub created_at_ms: i64,
}

impl From<ConnectorRecord> for ConnectorVersion {
    fn from(record: ConnectorRecord) -> Self {
        ConnectorVersion {
            manifest: serde_json::to_value(&record.manifest).unwrap_or(Value::Null),
            name: record.name,
            version: record.version,
            digest: record.digest,
            size_bytes: record.size_bytes,
            deprecated: record.deprecated,
            created_at_ms: record.created_at,
        }
    }
}

/// Uploads a component (`Content-Type: application/wasm`) or a declarative definition
/// (`application/json`, `application/yaml`). 201 for a new version, 200 when these bytes
/// already are this version; 409 when this name and version exist with other bytes; 422
/// (`invalid-component`, `invalid-definition`) when it fails validation, `detail` says why.
#[utoipa::path(post, path = "/v1/connectors", tag = "connectors",
    request_body(description = "a WebAssembly component, or a declarative definition (docs/declarative.md) as JSON or YAML",
        content((ComponentBytes = "application/wasm"), (DefinitionDocument = "application/json"), (DefinitionText = "application/yaml"))),
    responses(
        (status = 201, description = "a new version", body = ConnectorVersion),
        (status = 200, description = "the same bytes were already this version", body = ConnectorVersion),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 409, response = problem::Conflict),
        (status = 413, response = problem::PayloadTooLarge), (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable), (status = 429, response = problem::TooManyRequests),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn upload(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<ConnectorVersion>), ApiError> {
    store_upload(&state, caller.tenant(), &headers, body).await
}

/// Validates and keeps an upload as `owner`'s (a tenant, or the shared catalog).
pub(crate) async fn store_upload(
    state: &AppState,
    owner: &str,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<ConnectorVersion>), ApiError> {
    let tenant = owner.to_owned();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let syntax = if content_type.starts_with("application/wasm") {
        None
    } else {
        Some(Syntax::from_media_type(content_type).ok_or_else(|| {
            ApiError::UnsupportedMediaType(
                "upload a component with Content-Type: application/wasm, or a declarative \
                 definition with application/json or application/yaml"
                    .into(),
            )
        })?)
    };
    let bytes = body?;
    let bytes = match syntax {
        None if airlock_runtime::is_definition(&bytes) => {
            return Err(ApiError::InvalidComponent(
                "this is JSON, not a component: upload a definition as application/json".into(),
            ));
        }
        None => bytes,
        Some(syntax) => {
            if bytes.len() > airlock_runtime::MAX_DEFINITION_BYTES {
                return Err(ApiError::PayloadTooLarge(format!(
                    "a definition may be {} bytes at most",
                    airlock_runtime::MAX_DEFINITION_BYTES
                )));
            }
            // As every JSON body of this API: malformed is 400, not an object 422 on `body`.
            Bytes::from(definitions::canonical(&bytes, syntax).map_err(|e| match e {
                DefinitionTextError::NotAnObject => {
                    ApiError::validation("body", "the request body must be a JSON object")
                }
                other => ApiError::BadRequest(other.to_string()),
            })?)
        }
    };
    let Some(_slot) = state.compile_slots().try_acquire(&tenant) else {
        return Err(ApiError::TooManyRequests {
            detail: format!(
                "this tenant already has {} uploads compiling; retry when one has finished",
                state.compile_slots().per_tenant()
            ),
            retry_after_s: 1,
        });
    };
    // Nothing of a refused upload may stay behind (a 422 or a 409 used to leave its compiled
    // artifact in the cache directory): load without keeping, keep once the version row is
    // committed.
    let component = state
        .runtime()
        .load_unkept(&bytes)
        .await
        .map_err(|e| match e {
            LoadError::Busy => ApiError::Overloaded { retry_after_s: 5 },
            LoadError::Definition(reason) => ApiError::InvalidDefinition(reason),
            LoadError::Manifest(error) if syntax.is_some() => {
                ApiError::InvalidDefinition(error.to_string())
            }
            other => ApiError::InvalidComponent(other.to_string()),
        })?;
    let manifest = component.manifest().manifest().clone();
    let (record, outcome) = state
        .pipeline()
        .put_connector_version(&tenant, &component, &bytes)
        .await
        .map_err(|e| match e {
            CoreError::Store(StoreError::Conflict) => ApiError::Conflict(format!(
                "connector `{}` version {} already exists with different bytes; versions are immutable, bump the version",
                manifest.name, manifest.version
            )),
            other => other.into(),
        })?;
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Unchanged => StatusCode::OK,
    };
    Ok((status, Json(record.into())))
}

/// The tenant's connectors and their versions.
#[utoipa::path(get, path = "/v1/connectors", tag = "connectors",
    responses((status = 200, body = Vec<ConnectorSummary>),
        (status = 401, response = problem::Unauthorized), (status = 403, response = problem::Forbidden),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    caller: Member<at_least::Viewer>,
) -> Result<Json<Vec<ConnectorSummary>>, ApiError> {
    let summaries = state.store().list_connectors(caller.tenant()).await?;
    Ok(Json(summarize(summaries)))
}

/// Each connector with its current version and its versions, newest first.
pub(crate) fn summarize(summaries: Vec<airlock_store::ConnectorSummary>) -> Vec<ConnectorSummary> {
    summaries
        .into_iter()
        .map(|s| ConnectorSummary {
            name: s.name,
            current_version: s
                .versions
                .iter()
                .find(|v| !v.deprecated)
                .map(|v| v.version.clone()),
            versions: s
                .versions
                .into_iter()
                .map(|v| VersionSummary {
                    version: v.version,
                    digest: v.digest,
                    deprecated: v.deprecated,
                    created_at_ms: v.created_at,
                })
                .collect(),
        })
        .collect()
}

/// One version of a connector, with its manifest.
#[utoipa::path(get, path = "/v1/connectors/{name}/versions/{version}", tag = "connectors",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = ConnectorVersion),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn show(
    State(state): State<AppState>,
    caller: Member<at_least::Viewer>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ConnectorVersion>, ApiError> {
    let tenant = caller.tenant();
    let record = state
        .store()
        .connector_version(tenant, &name, &version)
        .await
        .map_err(ApiError::or_not_found("connector version"))?;
    Ok(Json(record.into()))
}

/// Deprecates a version: invocations that name no version stop using it.
#[utoipa::path(post, path = "/v1/connectors/{name}/versions/{version}/deprecate", tag = "connectors",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "the version, now deprecated: invocations that name no version stop using it", body = ConnectorVersion),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn deprecate(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ConnectorVersion>, ApiError> {
    set_deprecated(&state, caller.tenant(), &name, &version, true).await
}

#[utoipa::path(post, path = "/v1/connectors/{name}/versions/{version}/undeprecate", tag = "connectors",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "the version, no longer deprecated: if it is the newest, invocations that name no version use it again", body = ConnectorVersion),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn undeprecate(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ConnectorVersion>, ApiError> {
    set_deprecated(&state, caller.tenant(), &name, &version, false).await
}

/// Both directions are idempotent: deprecating a deprecated version answers it unchanged.
pub(crate) async fn set_deprecated(
    state: &AppState,
    tenant: &str,
    name: &str,
    version: &str,
    deprecated: bool,
) -> Result<Json<ConnectorVersion>, ApiError> {
    state
        .pipeline()
        .set_connector_deprecated(tenant, name, version, deprecated)
        .await?;
    let record = state
        .store()
        .connector_version(tenant, name, version)
        .await
        .map_err(ApiError::or_not_found("connector version"))?;
    Ok(Json(record.into()))
}
