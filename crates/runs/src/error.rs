//! [`RunsError`]: why a workflow or run request was refused. The API maps it to problem
//! documents in one place.

use airlock_core::CoreError;
use airlock_model::WorkflowError;
use airlock_store::{RunState, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    /// The definition or request is invalid; `field` names the part at fault.
    #[error("{detail}")]
    Invalid { field: String, detail: String },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// A definition names a connector, version or connection the tenant does not have.
    #[error("{field}: {detail}")]
    Missing { field: String, detail: String },
    /// A count the tenant may not exceed (`max_workflows`, `max_queued_runs`).
    #[error("the tenant has reached its `{quota}` of {limit}")]
    LimitReached { quota: &'static str, limit: u64 },
    /// The tenant used its `runs_per_hour`.
    #[error("the tenant used all {limit} runs of this hour")]
    QuotaExceeded { limit: u32, retry_after_s: u64 },
    /// The queue as a whole is deeper than the operator's threshold.
    #[error("the run queue is full ({depth} runs waiting); retry shortly")]
    QueueFull { depth: i64, retry_after_s: u64 },
    /// Too many calls of this kind too quickly (a dead-letter webhook's test sends).
    #[error("{detail}")]
    RateLimited { detail: String, retry_after_s: u64 },
    /// The operator suspended the tenant: it creates no runs until resumed.
    #[error("the tenant `{0}` is suspended")]
    TenantSuspended(String),
    /// The run is not in a state that allows this (replay of a running run, say).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Core(CoreError),
}

impl From<WorkflowError> for RunsError {
    fn from(error: WorkflowError) -> Self {
        RunsError::Invalid {
            field: error.field,
            detail: error.reason,
        }
    }
}

impl From<CoreError> for RunsError {
    fn from(error: CoreError) -> Self {
        match error {
            CoreError::NotFound { what } => RunsError::NotFound { what },
            CoreError::QuotaExceeded {
                limit,
                retry_after_s,
            } => RunsError::QuotaExceeded {
                limit,
                retry_after_s,
            },
            other => RunsError::Core(other),
        }
    }
}

impl From<StoreError> for RunsError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::LimitReached { quota, limit } => RunsError::LimitReached { quota, limit },
            StoreError::OverQuota {
                limit,
                retry_after_s,
            } => RunsError::QuotaExceeded {
                limit,
                retry_after_s,
            },
            other => CoreError::from(other).into(),
        }
    }
}

impl RunsError {
    /// For `map_err`: a missing row is `NotFound { what }`.
    pub fn or_not_found(what: &'static str) -> impl Fn(StoreError) -> RunsError {
        move |error| match error {
            StoreError::NotFound => RunsError::NotFound { what },
            other => other.into(),
        }
    }

    pub(crate) fn state(action: &str, state: RunState) -> RunsError {
        RunsError::Conflict(format!("cannot {action} a run that is {}", state.as_str()))
    }
}
