//! The scoped key-value store behind `cx.state()`, with JSON helpers for typed values.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::host::Host;

/// Why a state operation failed. The first two mirror the WIT `state-error`; `Json` is the
/// SDK's own, for values that do not (de)serialize as the caller's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The key, the value or the number of keys exceeds the host's caps.
    TooLarge(String),
    /// The host's store failed.
    Unavailable(String),
    /// The value is not JSON of the requested type, or the type does not serialize.
    Json(String),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::TooLarge(why) => write!(f, "state too large: {why}"),
            StateError::Unavailable(why) => write!(f, "state unavailable: {why}"),
            StateError::Json(why) => write!(f, "state value is not the expected JSON: {why}"),
        }
    }
}

impl std::error::Error for StateError {}

/// Returned by [`Context::state`](crate::Context::state). The host scopes every key to the
/// tenant and the connector, so keys need no prefix.
#[derive(Clone, Copy)]
pub struct State<'a> {
    host: &'a dyn Host,
}

impl<'a> State<'a> {
    pub(crate) fn new(host: &'a dyn Host) -> Self {
        State { host }
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.host.state_get(key)
    }

    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), StateError> {
        self.host.state_set(key, value.as_ref())
    }

    pub fn delete(&self, key: &str) -> Result<(), StateError> {
        self.host.state_delete(key)
    }

    /// Reads a JSON value; `Ok(None)` when the key is absent.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StateError::Json(format!("key {key:?}: {e}"))),
        }
    }

    pub fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), StateError> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| StateError::Json(format!("key {key:?}: {e}")))?;
        self.set(key, bytes)
    }
}
