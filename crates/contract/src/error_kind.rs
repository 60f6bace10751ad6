//! What kind of failure a connector reports: the WIT `error-kind`.

use std::fmt;

/// Mirrors the WIT `error-kind` variant. [`ConnectorErrorKind::as_str`] is its one spelling on
/// every surface (the SDK's messages, the API's `connector_kind`, logs): snake_case, like every
/// other error kind the host reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectorErrorKind {
    /// The credential was missing, rejected or expired.
    Auth,
    /// The input was well-formed JSON but the connector cannot act on it.
    InvalidInput,
    /// The upstream resource does not exist.
    NotFound,
    /// The upstream asked us to slow down.
    RateLimited,
    /// The upstream failed (5xx, malformed answer, transport failure).
    Upstream,
    /// The host's outbound gate refused a request.
    HttpDenied,
    /// The connector itself failed.
    Internal,
}

impl ConnectorErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::InvalidInput => "invalid_input",
            Self::NotFound => "not_found",
            Self::RateLimited => "rate_limited",
            Self::Upstream => "upstream",
            Self::HttpDenied => "http_denied",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ConnectorErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
