//! Reading an action's JSON input: every count and size is a field with a default, so a test
//! passes only what it wants to change.

use serde_json::{Map, Value};

use crate::bindings::airlock::connector::types::{ConnectorError, ErrorKind};
use crate::error;

/// An action's input object (an absent or `null` input reads as `{}`).
pub(crate) struct Input(Map<String, Value>);

impl Input {
    pub(crate) fn parse(text: &str) -> Result<Self, ConnectorError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Input(map)),
            Ok(Value::Null) => Ok(Input(Map::new())),
            Ok(_) => Err(invalid("input must be a JSON object")),
            Err(e) => Err(invalid(format!("input is not JSON: {e}"))),
        }
    }

    /// A non-negative integer field, or `default` when absent.
    pub(crate) fn u64(&self, name: &str, default: u64) -> Result<u64, ConnectorError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| invalid(format!("{name} must be a non-negative integer"))),
        }
    }

    /// An integer field that must fit the guest's (32-bit) address space.
    pub(crate) fn usize(&self, name: &str, default: usize) -> Result<usize, ConnectorError> {
        let value = self.u64(name, default as u64)?;
        usize::try_from(value)
            .map_err(|_| invalid(format!("{name} = {value} does not fit a wasm32 usize")))
    }

    /// A string field, or `default` when absent.
    pub(crate) fn str<'a>(
        &'a self,
        name: &str,
        default: &'a str,
    ) -> Result<&'a str, ConnectorError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(invalid(format!("{name} must be a string"))),
        }
    }

    /// A boolean field, or `default` when absent.
    pub(crate) fn bool(&self, name: &str, default: bool) -> Result<bool, ConnectorError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(format!("{name} must be a boolean"))),
        }
    }

    /// A required string field.
    pub(crate) fn required_str(&self, name: &str) -> Result<&str, ConnectorError> {
        match self.0.get(name) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(invalid(format!("{name} is required and must be a string"))),
        }
    }

    /// A field as raw JSON, if present.
    pub(crate) fn value(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }
}

fn invalid(message: impl Into<String>) -> ConnectorError {
    error(ErrorKind::InvalidInput, message)
}
