//! The closed sets label values come from.

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Dead,
    Cancelled,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Dead => "dead",
            RunOutcome::Cancelled => "cancelled",
        }
    }
}

/// What became of one webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    Accepted,
    Duplicate,
    /// Verified, and not matched by the trigger's filter: acknowledged, no run.
    Filtered,
    InvalidSignature,
    Paused,
    RateLimited,
    TooLarge,
    /// No such trigger (or not a webhook one).
    Unknown,
    /// Refused for another reason (queue full, quota, bad request).
    Refused,
}

impl WebhookOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Filtered => "filtered",
            WebhookOutcome::InvalidSignature => "invalid_signature",
            WebhookOutcome::Paused => "paused",
            WebhookOutcome::RateLimited => "rate_limited",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::Unknown => "unknown_trigger",
            WebhookOutcome::Refused => "refused",
        }
    }
}

/// What the scheduler did with one cron tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronTick {
    /// Fired on time.
    Fired,
    /// Fired, later than its time by more than the scheduler's period.
    Late,
    /// Not fired: past the catch-up window, or refused (quota, queue full).
    Missed,
    /// Not fired: the trigger's filter did not match it (nothing charged).
    Filtered,
}

impl CronTick {
    pub fn as_str(self) -> &'static str {
        match self {
            CronTick::Fired => "fired",
            CronTick::Late => "late",
            CronTick::Missed => "missed",
            CronTick::Filtered => "filtered",
        }
    }
}

/// What one attempt to deliver a dead-letter notice came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeAttempt {
    /// The tenant's webhook answered 2xx.
    Delivered,
    /// Not delivered; tried again later.
    Retried,
    /// Not delivered, and given up: out of attempts, or no webhook to send it to.
    Failed,
}

impl NoticeAttempt {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeAttempt::Delivered => "delivered",
            NoticeAttempt::Retried => "retried",
            NoticeAttempt::Failed => "failed",
        }
    }
}

/// Error and limit kinds a label may name: the runtime's, the connectors', the pipeline's and
/// the run engine's. Anything else (a kind a guest made up) is `other`.
const KINDS: &[&str] = &[
    "fuel_exhausted",
    "memory_limit",
    "timeout",
    "http_denied",
    "outbound_limit",
    "state_limit",
    "output_too_large",
    "invalid_input",
    "invalid_output",
    "guest_trap",
    "unknown_action",
    "connector_error",
    "upstream_unavailable",
    "overloaded",
    "internal",
    "auth",
    "not_found",
    "rate_limited",
    "upstream",
    "quota_exceeded",
    "cancelled",
    "credential_refresh",
    "requests",
    "request_bytes",
    "response_bytes",
    "log_bytes",
    "log_lines",
    "state_keys",
    "state_bytes",
    "concurrency",
];

/// `kind` if it is one of the kinds above, else `other`.
pub fn kind_label(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|known| **known == kind)
        .copied()
        .unwrap_or("other")
}

/// `2xx` .. `5xx` for a status, `1xx` too, `error` for no response.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "error",
    }
}

/// An HTTP method the API serves, else `other` (a client may send any token).
pub(crate) fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}
