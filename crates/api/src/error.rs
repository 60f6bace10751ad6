//! `ApiError`, the one error type of the API, and its RFC 9457 `application/problem+json`
//! form. Every failure the API returns, axum's own rejections included, goes through here;
//! no SQL text, file path or secret is ever put in a problem.

use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use airlock_core::CoreError;
use airlock_runs::{HookError, RunsError};
use airlock_store::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";
const TYPE_BASE: &str = "https://airlock.dev/problems/";
/// `Retry-After` of an `unavailable` answer: about the store's circuit breaker's open period,
/// after which one request probes the database again.
const UNAVAILABLE_RETRY_S: u64 = 1;
/// A suspended tenant's hooks: senders that honour it come back in minutes, not seconds.
const SUSPENDED_RETRY_S: u64 = 300;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem, e.g. `https://airlock.dev/problems/not-found`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation problems: the field at fault. Absent otherwise, never null.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// For `quota-exceeded`: the quota (`runs_per_hour`, `max_workflows`,
    /// `max_queued_runs`). Absent otherwise, never null.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub quota: Option<String>,
    /// `/readyz` only: `false`, with `reason` saying why (`database unreachable`,
    /// `migrations not applied`, `run queue full`, ...). Absent otherwise, never null.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub ready: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A webhook delivery whose signature, timestamp or headers do not verify (401, no
    /// `WWW-Authenticate`: the sender signs, it does not log in).
    #[error("{0}")]
    BadSignature(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{detail}")]
    Validation {
        detail: String,
        field: Option<String>,
    },
    #[error("{0}")]
    InvalidComponent(String),
    /// A declarative definition that does not parse or pass its checks; the detail names the
    /// field.
    #[error("{0}")]
    InvalidDefinition(String),
    #[error("the tenant used all {limit} runs of this hour")]
    QuotaExceeded { limit: u32, retry_after_s: u64 },
    /// A count quota other than the hourly runs (`max_workflows`, `max_queued_runs`).
    #[error("the tenant has reached its `{quota}` of {limit}")]
    LimitReached { quota: &'static str, limit: u64 },
    /// The run queue as a whole is past the operator's threshold.
    #[error("the run queue is full ({depth} runs waiting); retry shortly")]
    QueueFull { depth: i64, retry_after_s: u64 },
    /// An OAuth2 connection's access token expired and could not be refreshed. The message
    /// names the cause, never a token or the client secret.
    #[error("{0}")]
    CredentialRefresh(String),
    #[error("the runtime is at capacity; retry shortly")]
    Overloaded { retry_after_s: u64 },
    /// The caller has as many requests of this kind in flight as it may (429, Retry-After).
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_s: u64 },
    /// The HTTP server itself is at a limit (requests in flight, open connections).
    #[error("{detail}")]
    ServerBusy {
        detail: &'static str,
        retry_after_s: u64,
    },
    /// The request did not finish within the server's request timeout.
    #[error("the request did not finish within the server's limit of {limit_ms} ms")]
    RequestTimeout { limit_ms: u64 },
    #[error("{0}")]
    UriTooLong(String),
    #[error("{0}")]
    HeaderFieldsTooLarge(String),
    /// The caller's tenant is suspended by the operator (403: its tokens act on nothing).
    #[error("the token's tenant is suspended; only the operator can resume it")]
    TenantSuspended,
    /// A webhook of a suspended tenant (503, so that senders keep the delivery and retry it
    /// after a resume).
    #[error("this hook's tenant is suspended; deliveries are refused until it is resumed")]
    HookSuspended,
    /// The database is unreachable or failing; the cause is logged, not returned. Sent with
    /// `Retry-After` (the circuit breaker's open period is about that long).
    #[error("a dependency is unavailable")]
    Unavailable,
    /// `/readyz`: this process should not get traffic, for `reason` (a fixed phrase, never a
    /// driver's text).
    #[error("not ready: {reason}")]
    NotReady { reason: &'static str },
    /// A bug or an unexpected state; the cause is logged, not returned.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::Validation {
            detail: detail.into(),
            field: Some(field.into()),
        }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::NotFound(format!("{what} not found"))
    }

    /// For `map_err`: a missing row is a 404 naming `what`; other store errors map as usual.
    pub fn or_not_found(what: &'static str) -> impl Fn(StoreError) -> ApiError {
        move |error| match error {
            StoreError::NotFound => ApiError::not_found(what),
            other => other.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::BadSignature(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid-signature",
                "Invalid signature",
            ),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::TenantSuspended => (
                StatusCode::FORBIDDEN,
                "tenant-suspended",
                "Tenant suspended",
            ),
            ApiError::HookSuspended => (
                StatusCode::SERVICE_UNAVAILABLE,
                "tenant-suspended",
                "Tenant suspended",
            ),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            ApiError::Validation { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Validation failed",
            ),
            ApiError::InvalidComponent(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-component",
                "Invalid component",
            ),
            ApiError::InvalidDefinition(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-definition",
                "Invalid declarative definition",
            ),
            ApiError::QuotaExceeded { .. } | ApiError::LimitReached { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "quota-exceeded",
                "Quota exceeded",
            ),
            ApiError::CredentialRefresh(_) => (
                StatusCode::BAD_GATEWAY,
                "credential-refresh-failed",
                "Credential refresh failed",
            ),
            ApiError::QueueFull { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "queue-full", "Queue full")
            }
            ApiError::Overloaded { .. } | ApiError::ServerBusy { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Overloaded")
            }
            ApiError::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
            ),
            ApiError::RequestTimeout { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "request-timeout",
                "Request timeout",
            ),
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri-too-long", "URI too long"),
            ApiError::HeaderFieldsTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header-fields-too-large",
                "Request header fields too large",
            ),
            ApiError::Unavailable | ApiError::NotReady { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        let field = match self {
            ApiError::Validation { field, .. } => field.clone(),
            _ => None,
        };
        let quota = match self {
            ApiError::QuotaExceeded { .. } => Some("runs_per_hour".to_owned()),
            ApiError::LimitReached { quota, .. } => Some((*quota).to_owned()),
            _ => None,
        };
        let reason = match self {
            ApiError::NotReady { reason } => Some((*reason).to_owned()),
            _ => None,
        };
        Problem {
            type_: format!("{TYPE_BASE}{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: self.to_string(),
            field,
            quota,
            ready: reason.is_some().then_some(false),
            reason,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::QuotaExceeded { retry_after_s, .. }
            | ApiError::TooManyRequests { retry_after_s, .. }
            | ApiError::Overloaded { retry_after_s }
            | ApiError::QueueFull { retry_after_s, .. }
            | ApiError::ServerBusy { retry_after_s, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            }
            ApiError::Unavailable | ApiError::NotReady { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(UNAVAILABLE_RETRY_S));
            }
            ApiError::HookSuspended => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(SUSPENDED_RETRY_S));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Conflict => {
                ApiError::Conflict("a resource with this identity already exists".into())
            }
            StoreError::Corrupt(_) => {
                tracing::error!(%error, "stored data is unreadable");
                ApiError::Internal
            }
            StoreError::Busy(_) => ApiError::Overloaded { retry_after_s: 1 },
            StoreError::LimitReached { quota, limit } => ApiError::LimitReached { quota, limit },
            StoreError::OverQuota {
                limit,
                retry_after_s,
            } => ApiError::QuotaExceeded {
                limit,
                retry_after_s,
            },
            StoreError::Unavailable(_) | StoreError::Migrate(_) | StoreError::UnsupportedUrl => {
                tracing::error!(%error, "database failure");
                ApiError::Unavailable
            }
        }
    }
}

/// The pipeline's refusals: the one place they become problems.
impl From<CoreError> for ApiError {
    fn from(error: CoreError) -> Self {
        match error {
            CoreError::NotFound { what } => ApiError::not_found(what),
            CoreError::Invalid { field, detail } => ApiError::validation(field, detail),
            CoreError::UnknownAction(message) => ApiError::NotFound(message),
            CoreError::InvalidInput { detail, pointer } => ApiError::Validation {
                detail,
                field: pointer.map(|p| format!("/input{p}")),
            },
            CoreError::QuotaExceeded {
                limit,
                retry_after_s,
            } => ApiError::QuotaExceeded {
                limit,
                retry_after_s,
            },
            CoreError::Overloaded { retry_after_s } => ApiError::Overloaded { retry_after_s },
            CoreError::CredentialRefresh(message) => ApiError::CredentialRefresh(message),
            CoreError::Store(error) => error.into(),
            CoreError::Internal => ApiError::Internal,
        }
    }
}

/// Durable runs' refusals.
impl From<RunsError> for ApiError {
    fn from(error: RunsError) -> Self {
        match error {
            RunsError::Invalid { field, detail } => ApiError::validation(field, detail),
            RunsError::NotFound { what } => ApiError::not_found(what),
            RunsError::Missing { field, detail } => {
                ApiError::NotFound(format!("{field}: {detail}"))
            }
            RunsError::LimitReached { quota, limit } => ApiError::LimitReached { quota, limit },
            RunsError::QuotaExceeded {
                limit,
                retry_after_s,
            } => ApiError::QuotaExceeded {
                limit,
                retry_after_s,
            },
            RunsError::QueueFull {
                depth,
                retry_after_s,
            } => ApiError::QueueFull {
                depth,
                retry_after_s,
            },
            RunsError::Conflict(detail) => ApiError::Conflict(detail),
            RunsError::RateLimited {
                detail,
                retry_after_s,
            } => ApiError::TooManyRequests {
                detail,
                retry_after_s,
            },
            // Only deliveries reach run creation with a suspended tenant: a token of it is
            // refused before any handler.
            RunsError::TenantSuspended(_) => ApiError::HookSuspended,
            RunsError::Core(error) => error.into(),
        }
    }
}

impl From<HookError> for ApiError {
    fn from(error: HookError) -> Self {
        match error {
            HookError::NotFound => ApiError::not_found("hook"),
            HookError::Unverified(_) => ApiError::BadSignature(error.to_string()),
            HookError::Paused => ApiError::Conflict(error.to_string()),
            HookError::RateLimited { retry_after_s, .. } => ApiError::TooManyRequests {
                detail: error.to_string(),
                retry_after_s,
            },
            HookError::Runs(error) => error.into(),
        }
    }
}

/// axum's rejections carry their own status; keep it and give the body our shape. The
/// texts come from serde and axum and name positions and fields, never values.
fn from_rejection(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("the request body is larger than this route accepts".into())
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Validation {
            detail: text,
            field: None,
        },
        StatusCode::BAD_REQUEST => ApiError::BadRequest(text),
        _ => ApiError::BadRequest(text),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        from_rejection(rejection.status(), rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        from_rejection(rejection.status(), rejection.body_text())
    }
}

/// `axum::Json` with rejections turned into problems, for request bodies, every one of which
/// is a JSON object in this API. A body that is JSON but not an object is refused here, for
/// every route, with 422 `validation` on `body`: serde reads a struct from a JSON array as well
/// (`["acme"]` fills the fields in order, `[]` leaves each defaulted field at its default), so
/// the handler would act on a body the document does not allow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        if !json_content_type(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "Expected request with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = bytes::Bytes::from_request(request, state).await?;
        // Malformed JSON falls through to axum's parse, whose 400 says where it broke.
        if !is_object_text(&bytes)
            && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
        {
            return Err(ApiError::validation(
                "body",
                "the request body must be a JSON object",
            ));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Json(value))
    }
}

/// Whether the first byte past JSON whitespace opens an object.
fn is_object_text(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
}

/// axum's rule for a JSON body: `application/json` or `application/<anything>+json`, with
/// any parameters.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype
                .rsplit_once('+')
                .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json")))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The last line of defence: any error response that is not already a problem (a layer's
/// own 413, a 405 from the method router) becomes one with the same status.
pub async fn ensure_problem(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return response;
    }
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::NOT_FOUND => ApiError::not_found("route"),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("the request body is larger than this route accepts".into())
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType("unsupported content type".into())
        }
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized("missing or invalid bearer token"),
        StatusCode::FORBIDDEN => ApiError::Forbidden("forbidden".into()),
        s if s.is_server_error() => ApiError::Internal,
        _ => ApiError::BadRequest("the request could not be processed".into()),
    };
    let mut problem = error.into_response();
    *problem.status_mut() = status;
    if let Some(allow) = response.headers().get(header::ALLOW) {
        problem.headers_mut().insert(header::ALLOW, allow.clone());
    }
    problem
}
