//! A connector whose actions are attacks on the host: runaway CPU, stack and memory, outbound
//! floods, forbidden destinations, malformed output, log and state floods, and probes for data
//! left behind by other instances. Host tests invoke one action each and check the host held.
//!
//! It binds the WIT contract directly (not through `airlock-sdk`) so that it can break the
//! contract's promises in ways the SDK would never let a connector: invalid JSON, output that
//! misses its schema, raw pointer reads.

mod cpu;
mod input;
mod manifest;
mod memory;
mod outbound;
mod output;
mod state;

#[allow(
    unsafe_code,
    reason = "wit-bindgen's generated canonical-ABI glue (exported symbols, raw pointers) is \
              unsafe by nature; the unsafe stays inside this generated module"
)]
mod bindings {
    wit_bindgen::generate!({ world: "connector", path: "../../../guest-sdk/wit" });

    use super::Hostile;
    export!(Hostile);
}

use bindings::airlock::connector::types::{ConnectorError, ErrorKind};
use input::Input;

/// The component's export.
struct Hostile;

/// What every action returns: the output JSON text, or the error the host records.
type Outcome = Result<String, ConnectorError>;

impl bindings::Guest for Hostile {
    fn manifest() -> String {
        manifest::json()
    }

    fn invoke(action: String, input: String) -> Outcome {
        // `echo` and `bad_json` must not depend on the input being an object.
        match action.as_str() {
            "echo" => return output::echo(input),
            "bad_json" => return output::bad_json(),
            _ => {}
        }
        let input = Input::parse(&input)?;
        match action.as_str() {
            "spin" => cpu::spin(),
            "sleep" => cpu::sleep(&input),
            "recurse" => cpu::recurse(&input),
            "compute" => cpu::compute(&input),
            "grow_memory" => memory::grow_memory(&input),
            "alloc_huge" => memory::alloc_huge(&input),
            "write_pattern" => memory::write_pattern(&input),
            "read_pattern" => memory::read_pattern(&input),
            "flood" => outbound::flood(&input),
            "fetch" => outbound::fetch(&input),
            "echo_auth" => outbound::echo_auth(&input),
            "panic" => output::panic(),
            "big_output" => output::big_output(&input),
            "bad_schema" => output::bad_schema(),
            "bad_utf8" => output::bad_utf8(&input),
            "log_flood" => output::log_flood(&input),
            "state_flood" => state::flood(&input),
            "state_roundtrip" => state::roundtrip(&input),
            "state_get" => state::get(&input),
            "state_then_alloc" => state::then_alloc(&input),
            "step_key" => Ok(serde_json::json!({
                "key": bindings::airlock::connector::invocation::idempotency_key()
            })
            .to_string()),
            other => Err(error(
                ErrorKind::InvalidInput,
                format!("unknown action {other:?}"),
            )),
        }
    }

    fn test_connection() -> Result<(), ConnectorError> {
        outbound::test_connection()
    }
}

/// A non-retryable connector error.
fn error(kind: ErrorKind, message: impl Into<String>) -> ConnectorError {
    ConnectorError {
        kind,
        message: message.into(),
        retryable: false,
    }
}
