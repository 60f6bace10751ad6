//! The audit trail of the API: a request id on every request, and one audit record for every
//! `/v1` call that changed something (POST, PUT, PATCH, DELETE answered 2xx): who (the
//! token's subject), in which tenant, what (`METHOD /route/template`), on what (the id it
//! made or changed), when, and the request id.
//!
//! [`record`] holds the record pending while the handler runs
//! ([`airlock_store::with_pending_audit`]): the store write that commits the change appends
//! it in the same transaction, so a crash keeps both or neither. A change committed some
//! other way (a run created by hand goes through the group-committed enqueuer; an upload
//! that was already stored) is recorded after the handler, from its answer. Handlers that
//! audit in their own transaction with details of their own (cancel, replay, a tenant's
//! deletion) say so with [`AuditedInTx`], and calls that change nothing durable are listed
//! in [`UNAUDITED`].

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Principal;
use airlock_store::AuditDraft;

pub(crate) static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A response extension: this change was audited in the transaction that made it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuditedInTx;

/// The request's id, in the request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

/// State-changing routes that write no record, and why: they run a connector (its effects
/// are the upstream's, and the run, not the call, is the record), or send a test event, and
/// change no Airlock resource.
pub const UNAUDITED: &[(&str, &str)] = &[
    ("POST", "/v1/connectors/{name}/actions/{action}/invoke"),
    ("POST", "/v1/connectors/{name}/actions/{action}/test"),
    ("POST", "/v1/connections/{id}/test"),
    ("POST", "/v1/dead-letters/webhook/test"),
];

/// Largest response read back for the id it created (the API's answers are far smaller).
const MAX_READ_BACK: usize = 16 * 1024 * 1024;

/// Gives each request an id: the caller's `X-Request-Id` when it is a plain token (1-64 of
/// `A-Za-z0-9._-`), else a new one; echoed on the response.
pub(crate) async fn request_id(mut request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        .map(str::to_owned);
    let id = given.unwrap_or_else(|| format!("req_{}", uuid::Uuid::new_v4().simple()));
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    response
}

/// Writes the audit record of a change that succeeded.
pub(crate) async fn record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let mutating = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(route) = route.filter(|r| mutating && r.starts_with("/v1/")) else {
        return next.run(request).await;
    };
    let method = request.method().as_str().to_owned();
    if UNAUDITED.contains(&(method.as_str(), route.as_str())) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let principal = Principal::from_request_parts(&mut parts, &state).await.ok();
    let params: Vec<(String, String)> = RawPathParams::from_request_parts(&mut parts, &state)
        .await
        .map(|raw| {
            raw.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let request_id = parts
        .extensions
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    let request = Request::from_parts(parts, body);
    let Some(principal) = principal else {
        return next.run(request).await;
    };
    let detail = json!({
        "role": principal.role.as_str(),
        "params": params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>(),
    });
    let pending = AuditDraft {
        tenant_id: principal.tenant.clone().unwrap_or_default(),
        actor: principal.subject.clone(),
        action: format!("{method} {route}"),
        target: String::new(),
        request_id,
        detail,
    };
    let (response, written) =
        airlock_store::with_pending_audit(pending.clone(), next.run(request)).await;
    if written
        || !response.status().is_success()
        || response.extensions().get::<AuditedInTx>().is_some()
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_READ_BACK).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%error, route, "could not read a response back for its audit record");
            return Response::from_parts(parts, Body::empty());
        }
    };
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let target = target(&answer, &params);
    let tenant = match &principal.tenant {
        Some(tenant) => tenant.clone(),
        // An operator's change of a tenant is that tenant's record (its deletion is recorded
        // in the platform's chain by its handler, in the deleting transaction).
        None if route.starts_with("/v1/tenants") => {
            target.split('/').next().unwrap_or("").to_owned()
        }
        None => String::new(),
    };
    let draft = AuditDraft {
        tenant_id: tenant,
        target,
        ..pending
    };
    if let Err(error) = state.store().append_audit(&draft).await {
        // The change is committed; failing the answer now would invite a retry of it.
        tracing::error!(%error, action = %draft.action, target = %draft.target, "the audit record of a change could not be written");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// What a change made or changed: the id it answered with (a new resource), or its name and
/// version (a connector), else the route's parameters.
fn target(answer: &Value, params: &[(String, String)]) -> String {
    if let Some(id) = answer.get("id").and_then(Value::as_str) {
        return id.to_owned();
    }
    if let (Some(name), Some(version)) = (
        answer.get("name").and_then(Value::as_str),
        answer.get("version").and_then(Value::as_str),
    ) {
        return format!("{name}@{version}");
    }
    params
        .iter()
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join("/")
}
