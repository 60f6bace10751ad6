//! Trace context at the edge: each `/v1` and `/hooks` request is a server span, under the
//! caller's `traceparent` when it sent a valid one (sampling as [`airlock_telemetry::Spans`]
//! decides, so a caller cannot turn recording on), else in a new trace. Runs it creates and
//! calls it makes are that span's children.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use airlock_telemetry::{SpanKind, TraceContext};

/// The request's server span context, in the request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct RequestTrace(pub TraceContext);

impl<S: Send + Sync> FromRequestParts<S> for RequestTrace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        // Outside the middleware (a route it does not wrap): a trace of its own, unrecorded.
        Ok(parts
            .extensions
            .get::<RequestTrace>()
            .cloned()
            .unwrap_or_else(|| {
                RequestTrace(
                    remote_parent(&parts.headers)
                        .map(|p| p.unrecorded_child())
                        .unwrap_or_else(|| TraceContext::new_root(false)),
                )
            }))
    }
}

fn remote_parent(headers: &axum::http::HeaderMap) -> Option<TraceContext> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::from_traceparent)
}

/// Starts the request's server span (named by its route template, never its path: a hook's
/// path is its capability) and ends it with the response.
pub(crate) async fn server_span(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !(path.starts_with("/v1/") || path.starts_with("/hooks/")) {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let remote = remote_parent(request.headers());
    let mut span = state.runtime().metrics().spans().start_entry(
        format!("{method} {route}"),
        SpanKind::Server,
        remote.as_ref(),
    );
    span.set("http.request.method", method);
    span.set("http.route", route);
    request
        .extensions_mut()
        .insert(RequestTrace(span.context().clone()));
    let response = next.run(request).await;
    let status = response.status().as_u16();
    span.set("http.response.status_code", status);
    if status >= 500 {
        span.fail(status.to_string());
    }
    response
}
