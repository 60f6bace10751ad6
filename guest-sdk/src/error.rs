//! `ConnectorError`, the one error type an action returns, and how SDK errors map onto it.

use std::fmt;
use std::time::Duration;

use crate::http::HttpError;
use crate::state::StateError;

/// What kind of failure a connector reports; mirrors the WIT `error-kind`. Its `as_str` is the
/// spelling the host reports as `connector_kind` (snake_case), shared through `airlock-contract`.
pub use airlock_contract::ConnectorErrorKind as ErrorKind;

/// The error an action or `test_connection` returns; becomes the WIT `connector-error`.
///
/// `retryable` tells the host whether a durable run may try again, so each constructor picks
/// the default that fits its kind; override it with [`ConnectorError::retryable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorError {
    pub kind: ErrorKind,
    pub message: String,
    pub retryable: bool,
    /// How long a retry should wait at least (set with [`ConnectorError::retry_after`]).
    /// `None`: the host uses the `Retry-After` of the last 429 or 503 the connector got.
    pub retry_after: Option<Duration>,
}

impl ConnectorError {
    pub fn new(kind: ErrorKind, message: impl fmt::Display, retryable: bool) -> Self {
        ConnectorError {
            kind,
            message: message.to_string(),
            retryable,
            retry_after: None,
        }
    }

    /// The credential was missing, rejected or expired. Not retryable: a retry sends the same one.
    pub fn auth(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Auth, message, false)
    }

    pub fn invalid_input(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidInput, message, false)
    }

    pub fn not_found(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, message, false)
    }

    /// Retryable: the upstream only asked us to wait.
    pub fn rate_limited(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::RateLimited, message, true)
    }

    /// Retryable by default: upstream failures are usually transient. Use
    /// `.retryable(false)` for a malformed answer that a retry would not fix.
    pub fn upstream(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Upstream, message, true)
    }

    pub fn http_denied(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::HttpDenied, message, false)
    }

    pub fn internal(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, message, false)
    }

    /// Overrides the kind's default retry decision.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Asks a durable run to wait at least `wait` before the next attempt (capped by the
    /// step's `max_backoff_ms`): for an upstream that says when to come back somewhere the
    /// host does not read, such as a rate-limit reset in the body or an `X-RateLimit-Reset`
    /// header. A 429 or 503 with a standard `Retry-After` needs nothing: the host reads it.
    ///
    /// ```
    /// # use airlock_sdk::prelude::*;
    /// # use std::time::Duration;
    /// let error = ConnectorError::rate_limited("quota used").retry_after(Duration::from_secs(30));
    /// assert_eq!(error.retry_after, Some(Duration::from_secs(30)));
    /// ```
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ConnectorError {}

/// Lets `?` carry an outbound failure straight out of an action.
impl From<HttpError> for ConnectorError {
    fn from(err: HttpError) -> Self {
        match err {
            // The gate's decision will not change on a retry.
            HttpError::Denied(why) => ConnectorError::http_denied(why),
            HttpError::Timeout => ConnectorError::upstream("upstream request timed out"),
            HttpError::ConnectFailed(why) => {
                ConnectorError::upstream(format_args!("could not connect: {why}"))
            }
            // Caps are per tenant and per invocation; the same call hits them again.
            HttpError::TooLarge(why) => {
                ConnectorError::internal(format_args!("http body too large: {why}"))
            }
            HttpError::TooManyRequests => {
                ConnectorError::internal("outbound request limit for this invocation reached")
            }
            // URLs, methods and headers are built from the action's input far more often than
            // from a connector bug, so the caller is the one who can fix it.
            HttpError::InvalidRequest(why) => {
                ConnectorError::invalid_input(format_args!("invalid http request: {why}"))
            }
            // An unclassified transport failure may well be permanent (TLS, protocol); do not
            // let a durable run hammer it.
            HttpError::Other(why) => {
                ConnectorError::upstream(format_args!("http transport failed: {why}"))
                    .retryable(false)
            }
        }
    }
}

impl From<StateError> for ConnectorError {
    fn from(err: StateError) -> Self {
        match err {
            StateError::TooLarge(why) => {
                ConnectorError::internal(format_args!("state too large: {why}"))
            }
            // The host's store being down is the one state failure a retry can fix.
            StateError::Unavailable(why) => {
                ConnectorError::internal(format_args!("state unavailable: {why}")).retryable(true)
            }
            StateError::Json(why) => ConnectorError::internal(format_args!(
                "state value is not the expected JSON: {why}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(err: HttpError) -> (ErrorKind, bool) {
        let err = ConnectorError::from(err);
        (err.kind, err.retryable)
    }

    #[test]
    fn http_errors_map_to_kinds_and_retry_decisions() {
        use ErrorKind::*;
        assert_eq!(mapped(HttpError::Denied("x".into())), (HttpDenied, false));
        assert_eq!(mapped(HttpError::Timeout), (Upstream, true));
        assert_eq!(
            mapped(HttpError::ConnectFailed("x".into())),
            (Upstream, true)
        );
        assert_eq!(mapped(HttpError::TooLarge("x".into())), (Internal, false));
        assert_eq!(mapped(HttpError::TooManyRequests), (Internal, false));
        assert_eq!(
            mapped(HttpError::InvalidRequest("x".into())),
            (InvalidInput, false)
        );
        assert_eq!(mapped(HttpError::Other("x".into())), (Upstream, false));
    }

    #[test]
    fn denied_keeps_the_gate_reason() {
        let err = ConnectorError::from(HttpError::Denied("host evil.test not allowed".into()));
        assert_eq!(err.message, "host evil.test not allowed");
    }

    #[test]
    fn state_errors_map_to_internal_with_unavailable_retryable() {
        let unavailable = ConnectorError::from(StateError::Unavailable("db down".into()));
        assert_eq!(
            (unavailable.kind, unavailable.retryable),
            (ErrorKind::Internal, true)
        );
        let too_large = ConnectorError::from(StateError::TooLarge("value".into()));
        assert_eq!(
            (too_large.kind, too_large.retryable),
            (ErrorKind::Internal, false)
        );
    }

    #[test]
    fn constructors_pick_retry_defaults_and_can_override() {
        assert!(ConnectorError::rate_limited("slow down").retryable);
        assert!(ConnectorError::upstream("502").retryable);
        assert!(!ConnectorError::auth("bad token").retryable);
        assert!(
            !ConnectorError::upstream("garbage")
                .retryable(false)
                .retryable
        );
        assert_eq!(
            ConnectorError::not_found("gone").to_string(),
            "not_found: gone"
        );
    }
}
