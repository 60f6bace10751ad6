//! Attacks on the key-value state import: filling it past its caps, and the round trip that
//! tests use to check that state stays scoped to one tenant and connector.

use serde_json::{Value, json};

use crate::bindings::airlock::connector::state::{self, StateError};
use crate::bindings::airlock::connector::types::{ConnectorError, ErrorKind};
use crate::input::Input;
use crate::{Outcome, error};

/// Sets keys `flood-0`, `flood-1`, ... (`count`, default 10,000) to values of `value_bytes`
/// (default 1024) bytes until the host refuses one. The refusal comes back as an `internal`
/// error "state flood stopped after N keys: <state error>"; `{"set": count}` if none was
/// refused.
pub(crate) fn flood(input: &Input) -> Outcome {
    let count = input.u64("count", 10_000)?;
    let value = vec![b'v'; input.usize("value_bytes", 1024)?];
    for i in 0..count {
        if let Err(e) = state::set(&format!("flood-{i}"), &value) {
            return Err(error(
                ErrorKind::Internal,
                format!("state flood stopped after {i} keys: {}", describe(&e)),
            ));
        }
    }
    Ok(json!({ "set": count }).to_string())
}

/// Tries to set one value of `value_bytes` (default 1 MiB, past the default cap) and, refused
/// or not, carries on to allocate `bytes` (default: more than any memory limit): a state
/// limit followed by a memory limit.
pub(crate) fn then_alloc(input: &Input) -> Outcome {
    let value = vec![b'v'; input.usize("value_bytes", 1024 * 1024)?];
    let refused = state::set("then-alloc", &value).is_err();
    let bytes = input.usize("bytes", isize::MAX as usize)?;
    let mut block = vec![0u8; bytes];
    for i in (0..bytes).step_by(4096) {
        block[i] = 1;
    }
    std::hint::black_box(&mut block);
    Ok(json!({ "state_refused": refused, "allocated": bytes }).to_string())
}

/// Sets `key` (default "k") to `value` (default "v"; a string is stored as its UTF-8 bytes,
/// anything else as its JSON text), reads it back and returns `{"value": <what came back, as
/// a string, or null>}`.
pub(crate) fn roundtrip(input: &Input) -> Outcome {
    let key = input.str("key", "k")?;
    let value = match input.value("value") {
        None | Some(Value::Null) => "v".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    state::set(key, value.as_bytes()).map_err(failed)?;
    read(key)
}

/// Reads `key` (default "k") without writing it: `{"value": <string or null>}`. With
/// `state_roundtrip` this checks that one tenant cannot read another's state.
pub(crate) fn get(input: &Input) -> Outcome {
    read(input.str("key", "k")?)
}

fn read(key: &str) -> Outcome {
    let value = state::get(key)
        .map_err(failed)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    Ok(json!({ "value": value }).to_string())
}

fn failed(e: StateError) -> ConnectorError {
    error(ErrorKind::Internal, describe(&e))
}

/// "too-large: <text>" or "unavailable: <text>".
fn describe(e: &StateError) -> String {
    match e {
        StateError::TooLarge(s) => format!("too-large: {s}"),
        StateError::Unavailable(s) => format!("unavailable: {s}"),
    }
}
