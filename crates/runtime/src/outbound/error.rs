//! Errors of the outbound gate: what a guest sees (`HttpError`), what the operator sees when the
//! gate cannot be built (`OutboundError`), and which limit refused an invocation (`LimitHit`).

use std::fmt;

/// The failure of one guest request, as the guest sees it. Mirrors the WIT `http-error` variant
/// one to one, so the runtime's conversion is a plain `match`.
///
/// Every message is built by the gate (never a raw transport error with its URL) and passed
/// through the session's scrubber, so it cannot carry a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Refused by policy: host not allowed, private address, scheme, userinfo, ...
    #[error("denied: {0}")]
    Denied(String),
    /// The request (with its redirects and body) did not finish within the per-request timeout.
    #[error("timed out")]
    Timeout,
    /// A request or response body, or the invocation's byte total, exceeded its cap.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The invocation already sent as many requests as its limit allows.
    #[error("too many requests")]
    TooManyRequests,
    /// No connection could be established (DNS failure, refused, TLS handshake, ...).
    #[error("connect failed: {0}")]
    ConnectFailed(String),
    /// The request itself is malformed: method, URL, header.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Any other transport failure.
    #[error("{0}")]
    Other(String),
}

/// Why a [`Gate`](super::Gate) could not be built. Operator configuration errors, reported at
/// startup.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("resolve override for {host:?}: {reason}")]
    InvalidOverride { host: String, reason: String },
    #[error("extra root certificate #{index}: {reason}")]
    InvalidCertificate { index: usize, reason: String },
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Which byte or count cap refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundLimit {
    Requests,
    RequestBody,
    ResponseBody,
    TotalBytesOut,
    TotalBytesIn,
}

impl fmt::Display for OutboundLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutboundLimit::Requests => "max_requests",
            OutboundLimit::RequestBody => "max_request_body_bytes",
            OutboundLimit::ResponseBody => "max_response_body_bytes",
            OutboundLimit::TotalBytesOut => "max_total_bytes_out",
            OutboundLimit::TotalBytesIn => "max_total_bytes_in",
        })
    }
}

/// The first policy decision or limit that refused a request in a session. If the invocation
/// then fails, the runtime reports this as its error kind (`http_denied`, or an outbound limit)
/// rather than whatever the guest made of the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitHit {
    /// The gate's policy refused a request; the string is the (scrubbed) reason.
    HttpDenied(String),
    /// A count or byte cap refused a request.
    OutboundLimit(OutboundLimit),
}
