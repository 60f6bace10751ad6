//! The runtime's errors: why a component failed to load, and the named kind of every way an
//! invocation can fail. Kinds are stable strings: the CLI, the API and run records use them.

use std::fmt;

use serde::{Deserialize, Serialize};

use airlock_model::ManifestError;

/// Why an invocation failed. Each limit has its own kind so tenants and operators can tell a
/// runaway guest from a broken upstream without reading logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The guest used all the fuel of its invocation.
    FuelExhausted,
    /// The guest tried to grow its memory past the tenant's limit.
    MemoryLimit,
    /// The invocation ran past its wall-clock budget.
    Timeout,
    /// The outbound gate refused a request (host not allowed, private address, bad scheme) and
    /// the guest failed.
    HttpDenied,
    /// The guest hit an outbound count or byte limit and failed.
    OutboundLimit,
    /// The guest hit a state key, value or count limit and failed.
    StateLimit,
    /// The output JSON is larger than the tenant's limit.
    OutputTooLarge,
    /// The input is not JSON, too large, or fails the action's input schema.
    InvalidInput,
    /// The output is not JSON or fails the action's output schema.
    InvalidOutput,
    /// The guest trapped: a panic, a stack overflow, an out-of-bounds access.
    GuestTrap,
    /// The connector declares no such action.
    UnknownAction,
    /// The guest returned its own error (see `connector_kind`).
    ConnectorError,
    /// The guest failed after the outbound gate's circuit breaker refused a request to an
    /// upstream that kept failing for this tenant (see `connector_kind` for the guest's own).
    UpstreamUnavailable,
    /// Every instance slot is busy and the wait queue is full or waited too long.
    Overloaded,
    /// The host failed (instantiation, a bug); not the guest's fault.
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FuelExhausted => "fuel_exhausted",
            Self::MemoryLimit => "memory_limit",
            Self::Timeout => "timeout",
            Self::HttpDenied => "http_denied",
            Self::OutboundLimit => "outbound_limit",
            Self::StateLimit => "state_limit",
            Self::OutputTooLarge => "output_too_large",
            Self::InvalidInput => "invalid_input",
            Self::InvalidOutput => "invalid_output",
            Self::GuestTrap => "guest_trap",
            Self::UnknownAction => "unknown_action",
            Self::ConnectorError => "connector_error",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::Overloaded => "overloaded",
            Self::Internal => "internal",
        }
    }

    /// Whether this kind names a limit (or the output contract) that stopped the guest; such
    /// a failure is also the invocation's `stats.limit_hit`.
    pub fn is_limit(self) -> bool {
        matches!(
            self,
            Self::FuelExhausted
                | Self::MemoryLimit
                | Self::Timeout
                | Self::HttpDenied
                | Self::OutboundLimit
                | Self::StateLimit
                | Self::OutputTooLarge
                | Self::InvalidOutput
        )
    }

    /// Whether running the same invocation again may succeed. Limit hits are deterministic
    /// for a given input, so only load, an upstream that is down for now, and the guest's own
    /// say-so count as retryable.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::Overloaded | Self::Timeout | Self::UpstreamUnavailable
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct InvokeError {
    pub kind: ErrorKind,
    pub message: String,
    /// For `invalid_input` and `invalid_output`: the JSON pointer of the failing field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// For `connector_error`: the guest's own kind (`auth`, `not_found`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_kind: Option<String>,
    pub retryable: bool,
    /// For a retryable failure: how long the upstream (a 429 or 503 with `Retry-After`) or
    /// the connector asked a retry to wait, in milliseconds. Durable runs wait at least this
    /// long, capped by the step's policy. Not part of an API response.
    #[serde(skip)]
    pub retry_after_ms: Option<u64>,
}

impl InvokeError {
    /// The refusal of a call to an action the manifest does not declare.
    pub fn unknown_action(action: &str) -> Self {
        Self::new(
            ErrorKind::UnknownAction,
            format!("the connector has no action `{action}`"),
        )
    }

    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            pointer: None,
            connector_kind: None,
            retryable: kind.retryable(),
            retry_after_ms: None,
        }
    }

    pub fn at(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("the component imports `{0}`, which is outside the airlock:connector contract")]
    ForbiddenImport(String),
    #[error("the component does not export the connector world: {0}")]
    MissingExport(String),
    #[error("the component failed to compile: {0}")]
    Compile(String),
    #[error("the component's manifest() trapped or failed: {0}")]
    ManifestCall(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A declarative definition that does not pass its checks.
    #[error("invalid declarative definition: {0}")]
    Definition(String),
    #[error("cannot read component file {path}: {reason}")]
    Read { path: String, reason: String },
    /// Every compilation (or manifest-reading) slot stayed busy for the whole compile queue
    /// timeout.
    #[error("the runtime is loading as many components as it may at once; retry shortly")]
    Busy,
}

/// Why the runtime could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid engine configuration: {0}")]
    Engine(String),
    #[error("cannot use the artifact cache directory: {0}")]
    Cache(String),
    #[error(transparent)]
    Outbound(#[from] crate::outbound::OutboundError),
}
