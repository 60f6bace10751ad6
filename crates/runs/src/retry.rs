//! What follows a failed step: which failures are worth another attempt, and when.

use airlock_core::CoreError;
use airlock_model::RetryPolicy;
use airlock_runtime::{ErrorKind, InvokeError};
use serde::Serialize;

/// Bytes of a guest's error message a run keeps (in the step's journal row and in the run's
/// dead letter). The guest chooses the message, bounded otherwise only by its memory.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4 * 1024;

/// Why a step failed, as the run and its journal record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepError {
    /// The runtime's kind (`connector_error`, `timeout`, ...) or the pipeline's refusal
    /// (`not_found`, `invalid_input`, `credential_refresh`, `overloaded`, `internal`).
    pub kind: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector_kind: Option<String>,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// Asked-for wait before the next attempt by the host (the hourly quota's reset), if
    /// any: a floor, whatever the policy (an earlier attempt would be refused again).
    #[serde(skip)]
    pub retry_after_ms: Option<u64>,
    /// Asked-for wait by the upstream (`Retry-After` on a 429 or 503) or the connector: a
    /// floor too, capped by the step's `max_backoff_ms`, so an upstream cannot park a run
    /// longer than its workflow allows.
    #[serde(skip)]
    pub upstream_retry_after_ms: Option<u64>,
}

impl StepError {
    pub fn new(kind: &str, message: impl Into<String>, retryable: bool) -> StepError {
        StepError {
            kind: kind.to_owned(),
            message: message.into(),
            connector_kind: None,
            retryable,
            retry_after_ms: None,
            upstream_retry_after_ms: None,
        }
    }

    /// A guest that ran and failed. Retried when the runtime or the connector says a retry
    /// may help, except for what a retry cannot fix: a rejected credential, invalid input.
    pub fn from_guest(error: &InvokeError) -> StepError {
        let connector_kind = error.connector_kind.clone();
        let hopeless = error.kind == ErrorKind::InvalidInput
            || matches!(connector_kind.as_deref(), Some("auth" | "invalid_input"));
        StepError {
            kind: error.kind.as_str().to_owned(),
            message: capped_message(&error.message),
            retryable: error.retryable && !hopeless,
            connector_kind,
            retry_after_ms: None,
            upstream_retry_after_ms: error.retry_after_ms,
        }
    }

    /// A step the pipeline refused or failed around. Missing rows and invalid input stay
    /// wrong on every attempt; load, the database and a token endpoint may recover.
    pub fn from_core(error: &CoreError) -> StepError {
        let (kind, retryable) = match error {
            CoreError::NotFound { .. } => ("not_found", false),
            CoreError::Invalid { .. } => ("invalid", false),
            CoreError::UnknownAction(_) => ("unknown_action", false),
            CoreError::InvalidInput { .. } => ("invalid_input", false),
            CoreError::QuotaExceeded { .. } => ("quota_exceeded", true),
            CoreError::Overloaded { .. } => ("overloaded", true),
            CoreError::CredentialRefresh(_) => ("credential_refresh", true),
            CoreError::Store(_) => ("unavailable", true),
            CoreError::Internal => ("internal", true),
        };
        let retry_after_ms = match error {
            CoreError::QuotaExceeded { retry_after_s, .. }
            | CoreError::Overloaded { retry_after_s } => Some(retry_after_s.saturating_mul(1000)),
            _ => None,
        };
        let message = match error {
            // Store messages may carry driver text; runs show a fixed one.
            CoreError::Store(_) => "the database failed during the step".to_owned(),
            other => other.to_string(),
        };
        StepError {
            kind: kind.to_owned(),
            message,
            connector_kind: None,
            retryable,
            retry_after_ms,
            upstream_retry_after_ms: None,
        }
    }

    fn rate_limited(&self) -> bool {
        self.connector_kind.as_deref() == Some("rate_limited")
    }
}

/// `message` cut to [`MAX_ERROR_MESSAGE_BYTES`] at a character boundary, saying so.
fn capped_message(message: &str) -> String {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}... [message truncated: {} bytes in all]",
        &message[..end],
        message.len()
    )
}

/// The wait before attempt `failures + 1` after `failures` failed ones: full jitter
/// (uniform in `[0, min(max, initial * 2^(failures-1))]`), so a crowd of failed runs does
/// not come back in step. A rate-limited failure waits the whole window. An asked-for wait is
/// honoured as a floor: the host's whole, the upstream's up to the policy's `max_backoff_ms`.
pub fn backoff_ms(policy: &RetryPolicy, failures: u32, error: &StepError) -> u64 {
    let exponent = failures.saturating_sub(1).min(32);
    let window = policy
        .initial_backoff_ms
        .saturating_mul(1u64 << exponent)
        .min(policy.max_backoff_ms);
    let jittered = if error.rate_limited() {
        window
    } else {
        random_below(window.saturating_add(1))
    };
    let upstream = error
        .upstream_retry_after_ms
        .map_or(0, |ms| ms.min(policy.max_backoff_ms));
    jittered
        .max(upstream)
        .max(error.retry_after_ms.unwrap_or(0))
}

fn random_below(bound: u64) -> u64 {
    // Jitter needs no cryptographic quality; a failed read only loses the spread.
    getrandom::u64().map_or(bound / 2, |r| r % bound.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        initial_backoff_ms: 100,
        max_backoff_ms: 1_000,
    };

    #[test]
    fn a_guests_error_message_is_capped_at_a_character_boundary() {
        let mut error = InvokeError::new(ErrorKind::ConnectorError, "é".repeat(10_000));
        let step = StepError::from_guest(&error);
        assert!(
            step.message.len() <= MAX_ERROR_MESSAGE_BYTES + 64,
            "{}",
            step.message.len()
        );
        assert!(
            step.message
                .ends_with("[message truncated: 20000 bytes in all]")
        );
        error.message = "short".to_owned();
        assert_eq!(StepError::from_guest(&error).message, "short");
    }

    #[test]
    fn backoff_grows_within_the_full_jitter_window_and_is_capped() {
        let error = StepError::new("connector_error", "upstream", true);
        for (failures, window) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (60, 1_000),
        ] {
            let mut seen_low = false;
            for _ in 0..200 {
                let wait = backoff_ms(&POLICY, failures, &error);
                assert!(wait <= window, "{failures} failures: {wait} > {window}");
                seen_low |= wait < window / 2;
            }
            assert!(
                seen_low,
                "{failures} failures: no jitter below half the window"
            );
        }
    }

    #[test]
    fn rate_limited_waits_the_whole_window_and_asked_waits_are_floors() {
        let mut error = StepError::new("connector_error", "slow down", true);
        error.connector_kind = Some("rate_limited".into());
        assert_eq!(backoff_ms(&POLICY, 2, &error), 200);
        let mut asked = StepError::new("quota_exceeded", "hour used", true);
        asked.retry_after_ms = Some(5_000);
        assert!(backoff_ms(&POLICY, 1, &asked) >= 5_000);
    }

    #[test]
    fn the_upstreams_retry_after_is_a_floor_capped_by_the_policy() {
        let mut limited = InvokeError::new(ErrorKind::ConnectorError, "429");
        limited.connector_kind = Some("rate_limited".into());
        limited.retryable = true;
        limited.retry_after_ms = Some(800);
        let error = StepError::from_guest(&limited);
        for _ in 0..50 {
            let wait = backoff_ms(&POLICY, 1, &error);
            assert!((800..=1_000).contains(&wait), "{wait}");
        }
        // An upstream asking for an hour gets the policy's longest wait.
        limited.retry_after_ms = Some(3_600_000);
        let error = StepError::from_guest(&limited);
        assert_eq!(backoff_ms(&POLICY, 1, &error), POLICY.max_backoff_ms);
        // Any retryable guest failure carries it, not only `rate_limited`.
        let mut unavailable = InvokeError::new(ErrorKind::ConnectorError, "503");
        unavailable.connector_kind = Some("upstream".into());
        unavailable.retryable = true;
        unavailable.retry_after_ms = Some(700);
        let error = StepError::from_guest(&unavailable);
        assert!(backoff_ms(&POLICY, 1, &error) >= 700);
    }

    #[test]
    fn credential_and_input_failures_are_not_retried() {
        let mut auth = InvokeError::new(ErrorKind::ConnectorError, "rejected");
        auth.connector_kind = Some("auth".into());
        auth.retryable = true;
        assert!(!StepError::from_guest(&auth).retryable);
        let mut upstream = InvokeError::new(ErrorKind::ConnectorError, "502");
        upstream.connector_kind = Some("upstream".into());
        upstream.retryable = true;
        assert!(StepError::from_guest(&upstream).retryable);
        upstream.retryable = false;
        assert!(!StepError::from_guest(&upstream).retryable);
        assert!(!StepError::from_core(&CoreError::NotFound { what: "connector" }).retryable);
        assert!(StepError::from_core(&CoreError::Overloaded { retry_after_s: 1 }).retryable);
    }
}
