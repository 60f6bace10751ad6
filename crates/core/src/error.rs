//! [`CoreError`]: why the pipeline did not run a guest, or failed around it. Callers map it
//! to their surface (the API to problem documents, in one place); messages name no secret,
//! SQL or file path.

use airlock_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A row the request names does not exist in the tenant (`what`: "tenant", "connector
    /// version", "connection").
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The request is inconsistent with what it names (a connection of another connector).
    #[error("{detail}")]
    Invalid { field: &'static str, detail: String },
    /// The connector has no such action. Not charged.
    #[error("{0}")]
    UnknownAction(String),
    /// The input is too large, not JSON or fails the action's schema; `pointer` is the JSON
    /// pointer into the input. Not charged.
    #[error("{detail}")]
    InvalidInput {
        detail: String,
        pointer: Option<String>,
    },
    /// The tenant used its runs of this hour.
    #[error("the tenant used all {limit} runs of this hour")]
    QuotaExceeded { limit: u32, retry_after_s: u64 },
    /// No room: the tenant's or the pool's queue is full, the slot wait timed out, the run
    /// admission queue is full, or compilation slots are busy. A charged run is refunded.
    #[error("the runtime is at capacity; retry shortly")]
    Overloaded { retry_after_s: u64 },
    /// An OAuth2 connection's token expired or was rejected and could not be refreshed (or a
    /// recent refresh failed and the connection is backing off). Charged: the run was
    /// admitted before the refresh.
    #[error("{0}")]
    CredentialRefresh(String),
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
    /// A host failure; the cause was logged.
    #[error("internal error")]
    Internal,
}

impl CoreError {
    /// For `map_err`: a missing row is `NotFound { what }`; other store errors as they are.
    pub fn or_not_found(what: &'static str) -> impl Fn(StoreError) -> CoreError {
        move |error| match error {
            StoreError::NotFound => CoreError::NotFound { what },
            other => other.into(),
        }
    }
}

impl From<StoreError> for CoreError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Busy(_) => CoreError::Overloaded { retry_after_s: 1 },
            StoreError::OverQuota {
                limit,
                retry_after_s,
            } => CoreError::QuotaExceeded {
                limit,
                retry_after_s,
            },
            other => CoreError::Store(other),
        }
    }
}
