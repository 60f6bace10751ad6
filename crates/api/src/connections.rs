//! Connections: a tenant's credential for a connector, shaped by the connector's auth type.
//! Secret fields are encrypted into one envelope with the tenant and connection ids as
//! associated data; they are write-only: every response shows them as `***`.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Member, at_least};
use super::error::{ApiError, Json};
use super::invoke::InvokeResponse;
use super::openapi::problem;
use super::trace::RequestTrace;
use airlock_core::{Charge, ConnectionDraft, CoreError, Invocation};
use airlock_model::{AuthSpec, AuthType, ConnectionId, TenantId};
use airlock_runtime::Call;
use airlock_secrets::{REDACTED, Secret};
use airlock_store::{ConnectionChange, ConnectionRecord, StoreError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/connections", get(list).post(create))
        .route("/connections/{id}", get(show).patch(update).delete(remove))
        .route("/connections/{id}/test", post(test))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    /// The connector's name; its current version's auth type shapes `credential`.
    pub connector: String,
    /// Unique within the tenant; 1-200 characters, not all whitespace (leading and trailing
    /// whitespace is dropped).
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// By auth type: `api_key` `{api_key}`; `basic` `{username, password}`; `custom_header`
    /// `{headers: {NAME: VALUE}}`; `oauth2` `{client_id, client_secret, refresh_token?,
    /// access_token?, expires_at?}`; `none`: absent (or null).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub credential: Value,
    /// Non-secret settings (base URL parts, region, account id, the hosts a generic
    /// connector's credential is for), checked against the connector's `config_schema`.
    /// Stored in clear and shown as given; never put a secret here.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Value,
}

/// A change to a connection: each field given replaces the stored one; absent (or null)
/// fields stay as they are, and a change with none changes nothing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConnection {
    /// As at creation.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// A whole new credential, shaped by the auth type of the connector's current version
    /// (as at creation); sealed under the current key. Old values are not kept.
    #[schema(value_type = Option<Object>)]
    pub credential: Option<Value>,
    /// A whole new config, checked against the connector's `config_schema`.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// Run the connector's `test-connection` with the changed connection first, and save
    /// only if it passes (422 `field: test` otherwise, nothing changed). An OAuth2 credential
    /// is tested with the `access_token` given, without a refresh.
    #[serde(default)]
    pub test: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Connection {
    pub id: String,
    pub connector: String,
    pub name: String,
    pub auth_type: String,
    /// The credential with every secret field shown as `***`.
    #[schema(value_type = Object)]
    pub credential: Value,
    /// The connection's config, as given.
    #[schema(value_type = Object)]
    pub config: Value,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// The connection's credential split into what is stored in clear and what is encrypted.
struct Split {
    fields: Map<String, Value>,
    secrets: BTreeMap<String, Secret>,
}

fn take_string(
    credential: &mut Map<String, Value>,
    field: &str,
    required: bool,
) -> Result<Option<String>, ApiError> {
    match credential.remove(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        None | Some(Value::Null) if !required => Ok(None),
        _ => Err(ApiError::validation(
            format!("credential.{field}"),
            format!("`{field}` must be a non-empty string"),
        )),
    }
}

/// Checks `credential` against the auth type and splits it.
fn split(spec: &AuthSpec, credential: Value) -> Result<Split, ApiError> {
    let mut credential = match credential {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        _ => {
            return Err(ApiError::validation(
                "credential",
                "`credential` must be an object",
            ));
        }
    };
    let mut fields = Map::new();
    let mut secrets = BTreeMap::new();
    match spec {
        AuthSpec::None => {}
        AuthSpec::ApiKey { .. } => {
            let key = take_string(&mut credential, "api_key", true)?.unwrap_or_default();
            secrets.insert("api_key".to_owned(), Secret::new(key));
        }
        AuthSpec::Basic => {
            let username = take_string(&mut credential, "username", true)?.unwrap_or_default();
            let password = take_string(&mut credential, "password", true)?.unwrap_or_default();
            fields.insert("username".into(), Value::String(username));
            secrets.insert("password".to_owned(), Secret::new(password));
        }
        AuthSpec::CustomHeader { headers: declared } => {
            let Some(Value::Object(given)) = credential.remove("headers") else {
                return Err(ApiError::validation(
                    "credential.headers",
                    "`headers` must be an object of header values",
                ));
            };
            let mut names = Vec::new();
            for (name, value) in given {
                let Some(declared_name) = declared.iter().find(|d| d.eq_ignore_ascii_case(&name))
                else {
                    return Err(ApiError::validation(
                        format!("credential.headers.{name}"),
                        format!(
                            "the connector declares no header `{name}`; it declares {declared:?}"
                        ),
                    ));
                };
                let Value::String(value) = value else {
                    return Err(ApiError::validation(
                        format!("credential.headers.{name}"),
                        "header values are strings",
                    ));
                };
                names.push(Value::String(declared_name.clone()));
                secrets.insert(declared_name.clone(), Secret::new(value));
            }
            if let Some(missing) = declared.iter().find(|d| !secrets.contains_key(*d)) {
                return Err(ApiError::validation(
                    format!("credential.headers.{missing}"),
                    format!("header `{missing}` is required"),
                ));
            }
            fields.insert("headers".into(), Value::Array(names));
        }
        AuthSpec::OAuth2 { .. } => {
            let client_id = take_string(&mut credential, "client_id", true)?.unwrap_or_default();
            fields.insert("client_id".into(), Value::String(client_id));
            let client_secret =
                take_string(&mut credential, "client_secret", true)?.unwrap_or_default();
            secrets.insert("client_secret".to_owned(), Secret::new(client_secret));
            for field in ["refresh_token", "access_token"] {
                if let Some(value) = take_string(&mut credential, field, false)? {
                    secrets.insert(field.to_owned(), Secret::new(value));
                }
            }
            match credential.remove("expires_at") {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) if n.is_i64() => {
                    fields.insert("expires_at".into(), Value::Number(n));
                }
                Some(_) => {
                    return Err(ApiError::validation(
                        "credential.expires_at",
                        "`expires_at` is unix seconds",
                    ));
                }
            }
        }
    }
    if let Some(extra) = credential.keys().next() {
        return Err(ApiError::validation(
            format!("credential.{extra}"),
            format!(
                "`{extra}` is not a field of the `{}` auth type",
                spec.type_name()
            ),
        ));
    }
    Ok(Split { fields, secrets })
}

/// The public form: clear fields as stored, each secret field as `***`.
fn masked(record: &ConnectionRecord) -> Value {
    let mut credential = match &record.fields {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    match record.auth_type {
        AuthType::ApiKey => {
            credential.insert("api_key".into(), json!(REDACTED));
        }
        AuthType::Basic => {
            credential.insert("password".into(), json!(REDACTED));
        }
        AuthType::CustomHeader => {
            let names = credential
                .remove("headers")
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            let headers: Map<String, Value> = names
                .iter()
                .filter_map(Value::as_str)
                .map(|n| (n.to_owned(), json!(REDACTED)))
                .collect();
            credential.insert("headers".into(), Value::Object(headers));
        }
        AuthType::OAuth2 => {
            credential.insert("client_secret".into(), json!(REDACTED));
            for field in ["refresh_token", "access_token"] {
                credential.insert(field.into(), json!(REDACTED));
            }
        }
        _ => {}
    }
    Value::Object(credential)
}

impl From<&ConnectionRecord> for Connection {
    fn from(record: &ConnectionRecord) -> Self {
        Connection {
            id: record.id.clone(),
            connector: record.connector.clone(),
            name: record.name.clone(),
            auth_type: record.auth_type.as_str().to_owned(),
            credential: masked(record),
            config: (*record.config).clone(),
            created_at_ms: record.created_at,
            updated_at_ms: record.updated_at,
        }
    }
}

/// Creates a connection for one of the tenant's connectors. 404 when there is no such
/// connector; 409 when the name is taken; 422 when the credential does not fit the
/// connector's auth type (`field` names the field).
#[utoipa::path(post, path = "/v1/connections", tag = "connections", request_body = CreateConnection,
    responses((status = 201, body = Connection),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict), (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType), (status = 422, response = problem::Unprocessable),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Json(body): Json<CreateConnection>,
) -> Result<(StatusCode, Json<Connection>), ApiError> {
    let tenant = caller.tenant();
    let name = super::names::check_name(&body.name, "connection")?;
    airlock_contract::names::check(&body.connector)
        .map_err(|e| ApiError::validation("connector", format!("the connector name {e}")))?;
    let connector = current_connector(&state, tenant, &body.connector).await?;
    let spec = &connector.manifest.auth;
    let split = split(spec, body.credential)?;
    let config = match body.config {
        Value::Null => Value::Object(Map::new()),
        config => config,
    };
    check_config(&connector.manifest, &config)?;
    credential_reaches_a_host(!split.secrets.is_empty(), &connector.manifest, &config)?;
    let draft = ConnectionDraft {
        connector: connector.name.clone(),
        name,
        auth_type: AuthType::from(spec),
        fields: Value::Object(split.fields),
        secrets: split.secrets,
        config,
    };
    let record = state
        .pipeline()
        .create_connection(tenant, draft)
        .await
        .map_err(name_taken)?;
    Ok((StatusCode::CREATED, Json(Connection::from(&record))))
}

/// The tenant's connections, secrets masked.
#[utoipa::path(get, path = "/v1/connections", tag = "connections",
    responses((status = 200, body = Vec<Connection>),
        (status = 401, response = problem::Unauthorized), (status = 403, response = problem::Forbidden),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    caller: Member<at_least::Viewer>,
) -> Result<Json<Vec<Connection>>, ApiError> {
    let tenant = caller.tenant();
    let records = state.store().list_connections(tenant).await?;
    Ok(Json(records.iter().map(Connection::from).collect()))
}

/// One connection, secrets masked.
#[utoipa::path(get, path = "/v1/connections/{id}", tag = "connections", params(("id" = String, Path)),
    responses((status = 200, body = Connection),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn show(
    State(state): State<AppState>,
    caller: Member<at_least::Viewer>,
    Path(id): Path<String>,
) -> Result<Json<Connection>, ApiError> {
    let tenant = caller.tenant();
    let record = state
        .store()
        .connection(tenant, &id)
        .await
        .map_err(ApiError::or_not_found("connection"))?;
    Ok(Json(Connection::from(&record)))
}

/// Replaces a connection's credential, config or name: the way to fix an expired or rotated
/// credential without breaking the workflows and triggers that name the connection. The
/// next invocation in this process uses the new values, and every other process within a
/// second; runs replayed after it use them too. Audited (the record names the connection,
/// never a value). A config that would send the stored credential to hosts it was not given
/// for needs the credential again (422 `field: credential`). 404 no such connection (or its
/// connector is gone); 409 the name is taken; 422 a field does not fit the connector
/// (`field` names it), or the test failed.
#[utoipa::path(patch, path = "/v1/connections/{id}", tag = "connections", params(("id" = String, Path)),
    request_body = UpdateConnection,
    responses((status = 200, body = Connection),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict), (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType), (status = 422, response = problem::Unprocessable),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn update(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(id): Path<String>,
    trace: RequestTrace,
    Json(body): Json<UpdateConnection>,
) -> Result<Json<Connection>, ApiError> {
    let tenant = caller.tenant();
    let existing = state
        .store()
        .connection(tenant, &id)
        .await
        .map_err(ApiError::or_not_found("connection"))?;
    if body.name.is_none() && body.credential.is_none() && body.config.is_none() {
        // An empty change changes nothing (as an empty JSON merge patch); with `test`, it
        // tests the connection as it is.
        if body.test {
            let unchanged = ConnectionChange::default();
            test_before_saving(&state, tenant, &existing, &unchanged, trace).await?;
        }
        return Ok(Json(Connection::from(&existing)));
    }
    let name = match &body.name {
        Some(name) => Some(super::names::check_name(name, "connection")?),
        None => None,
    };
    let connector = current_connector(&state, tenant, &existing.connector).await?;
    let spec = &connector.manifest.auth;
    let split = match body.credential {
        Some(credential) => Some(split(spec, credential)?),
        None => None,
    };
    let config = match body.config {
        Some(config) => {
            check_config(&connector.manifest, &config)?;
            Some(config)
        }
        None => None,
    };
    let effective_config = config.as_ref().unwrap_or(&existing.config);
    let has_secret = match &split {
        Some(split) => !split.secrets.is_empty(),
        None => existing.secret.is_some(),
    };
    credential_reaches_a_host(has_secret, &connector.manifest, effective_config)?;
    // A stored credential stays with the hosts it was given for: an editor who cannot read
    // it must not be able to send it somewhere else by changing the config alone (the
    // `http` connector's `credential_hosts`, a `{config.region}` label). Moving it takes the
    // credential again.
    if split.is_none() && existing.secret.is_some() {
        let hosts = |config| explicit_hosts(&connector.manifest, config);
        if !hosts(effective_config).is_subset(&hosts(&existing.config)) {
            return Err(ApiError::validation(
                "credential",
                "this config sends the stored credential to hosts it was not given for; send the credential again with the new config",
            ));
        }
    }
    let credential = match split {
        Some(split) => Some(state.pipeline().seal_credential(
            tenant,
            &id,
            AuthType::from(spec),
            Value::Object(split.fields),
            &split.secrets,
        )?),
        None => None,
    };
    let change = ConnectionChange {
        name,
        credential,
        config,
    };
    if body.test {
        test_before_saving(&state, tenant, &existing, &change, trace).await?;
    }
    let record = state
        .pipeline()
        .update_connection(tenant, &id, change)
        .await
        .map_err(name_taken)?;
    Ok(Json(Connection::from(&record)))
}

/// The current version of connector `name` as the tenant runs it: its own, else the shared
/// catalog's (404 without one).
async fn current_connector(
    state: &AppState,
    tenant: &str,
    name: &str,
) -> Result<airlock_store::ConnectorRecord, ApiError> {
    state
        .store()
        .resolved_current_connector(tenant, name)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("connector"),
            other => other.into(),
        })
}

/// `config` against the connector's `config_schema` (422 naming the field).
fn check_config(manifest: &airlock_model::Manifest, config: &Value) -> Result<(), ApiError> {
    manifest.check_config(config).map_err(|violation| {
        ApiError::validation(
            format!("config{}", violation.pointer.replace('/', ".")),
            violation.message,
        )
    })
}

/// The explicit hosts (not `*`) the connector sends a credential to with `config`.
fn explicit_hosts(manifest: &airlock_model::Manifest, config: &Value) -> BTreeSet<String> {
    manifest
        .hosts_for(config)
        .map(|hosts| {
            hosts
                .iter()
                .filter(|h| h.is_explicit())
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A credential that no explicit host would ever receive is a mistake (typically the `http`
/// connector without `credential_hosts`): say so now, not with a 401 later.
fn credential_reaches_a_host(
    has_secret: bool,
    manifest: &airlock_model::Manifest,
    config: &Value,
) -> Result<(), ApiError> {
    if has_secret && explicit_hosts(manifest, config).is_empty() {
        return Err(ApiError::validation(
            "config",
            "with this config the connector names no explicit host, so the credential would never be sent; list the hosts it is for (for `http`: `credential_hosts`)",
        ));
    }
    Ok(())
}

/// A name already used by another of the tenant's connections is a conflict.
fn name_taken(error: CoreError) -> ApiError {
    match error {
        CoreError::Store(StoreError::Conflict) => {
            ApiError::Conflict("a connection with this name already exists".into())
        }
        other => other.into(),
    }
}

/// Runs `test-connection` with the connection as `change` would make it; an error unless it
/// passed.
async fn test_before_saving(
    state: &AppState,
    tenant: &str,
    existing: &ConnectionRecord,
    change: &ConnectionChange,
    trace: RequestTrace,
) -> Result<(), ApiError> {
    let mut candidate = existing.clone();
    if let Some(name) = &change.name {
        candidate.name = name.clone();
    }
    if let Some(credential) = &change.credential {
        candidate.auth_type = credential.auth_type;
        candidate.fields = credential.fields.clone();
        candidate.secret = credential.secret.clone();
    }
    if let Some(config) = &change.config {
        candidate.config = std::sync::Arc::new(config.clone());
    }
    let ran = state
        .pipeline()
        .test_candidate(
            TenantId::new(tenant),
            candidate,
            change.credential.is_some(),
            Some(trace.0),
        )
        .await?;
    match ran.outcome.result {
        Ok(_) => Ok(()),
        Err(error) => {
            let mut message = error.message.clone();
            if message.len() > 500 {
                let mut end = 500;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message.truncate(end);
            }
            Err(ApiError::validation(
                "test",
                format!(
                    "test-connection failed with the change ({}: {message}); nothing was changed",
                    error.kind.as_str()
                ),
            ))
        }
    }
}

/// Deletes a connection.
#[utoipa::path(delete, path = "/v1/connections/{id}", tag = "connections", params(("id" = String, Path)),
    responses((status = 204, description = "deleted"),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn remove(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant();
    state.pipeline().delete_connection(tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs the connector's `test-connection` with this connection's credential (not counted
/// against the hourly runs). 503 `overloaded` when every instance slot is busy.
#[utoipa::path(post, path = "/v1/connections/{id}/test", tag = "connections", params(("id" = String, Path)),
    responses((status = 200, description = "the guest's test-connection ran; `ok` says whether it passed", body = InvokeResponse),
        (status = 400, response = problem::BadRequest), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden), (status = 404, response = problem::NotFound),
        (status = 502, response = problem::BadGateway), (status = 503, response = problem::Unavailable)),
    security(("bearer" = [])))]
async fn test(
    State(state): State<AppState>,
    caller: Member<at_least::Editor>,
    Path(id): Path<String>,
    trace: RequestTrace,
) -> Result<Json<InvokeResponse>, ApiError> {
    let tenant = caller.tenant();
    let ran = state
        .pipeline()
        .invoke(Invocation {
            tenant: TenantId::new(tenant),
            connector: None,
            version: None,
            connection: Some(ConnectionId::new(&id)),
            call: Call::TestConnection,
            charge: Charge::Free,
            timeout_ms: None,
            idempotency_key: None,
            trace_context: Some(trace.0),
        })
        .await?;
    Ok(Json(InvokeResponse::from_ran(ran)))
}
