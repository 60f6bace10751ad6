//! The `Host` trait: the WIT imports as one seam, so the wasm bindings and `MockHost` share
//! every line of SDK logic above it.

use crate::http::{HttpError, Request, Response};
use crate::log::Level;
use crate::state::StateError;

pub(crate) trait Host {
    fn send(&self, request: Request) -> Result<Response, HttpError>;
    fn log(&self, level: Level, message: &str);
    fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    fn state_set(&self, key: &str, value: &[u8]) -> Result<(), StateError>;
    fn state_delete(&self, key: &str) -> Result<(), StateError>;
    fn idempotency_key(&self) -> Option<String>;
    /// The connection's config, JSON text of an object.
    fn config(&self) -> String;
    /// The declarative runner's plan (see `wit/connector.wit` in this crate); `None` for
    /// everyone else.
    fn declarative_plan(&self) -> Option<String>;
}
