//! The hostile connector's manifest, written by hand (the SDK would generate it). The manifest
//! itself is well-formed: the attacks are in the actions, not in loading.

use serde_json::{Value, json};

pub(crate) fn json() -> String {
    let any = json!({});
    let actions = vec![
        action("spin", "Loops forever", any.clone(), any.clone()),
        action(
            "sleep",
            "Sleeps without using CPU, holding its slot",
            object(json!({ "ms": count() })),
            any.clone(),
        ),
        action(
            "recurse",
            "Recurses until the stack overflows",
            object(json!({ "mode": { "type": "string", "enum": ["native", "shadow"] } })),
            any.clone(),
        ),
        action(
            "compute",
            "A terminating CPU-bound loop (benchmark workload)",
            object(json!({ "n": count() })),
            any.clone(),
        ),
        action(
            "grow_memory",
            "Grows linear memory until refused",
            object(json!({ "step_pages": count() })),
            any.clone(),
        ),
        action(
            "alloc_huge",
            "Allocates and touches one huge block",
            object(json!({ "bytes": count() })),
            any.clone(),
        ),
        action(
            "write_pattern",
            "Leaves a byte pattern in fresh memory",
            object(json!({ "bytes": count(), "pattern": string() })),
            any.clone(),
        ),
        action(
            "read_pattern",
            "Scans all of linear memory for a pattern left by another instance",
            object(json!({
                "bytes": count(),
                "grow_pages": count(),
                "pattern": string(),
                "plant": { "type": "boolean" },
            })),
            any.clone(),
        ),
        action(
            "flood",
            "Sends requests until the host says too-many-requests",
            object(json!({ "count": count() })),
            any.clone(),
        ),
        action("fetch", "Requests any URL", request_schema(), any.clone()),
        action(
            "echo_auth",
            "Requests a URL and echoes the response to output, log and stdio",
            request_schema(),
            any.clone(),
        ),
        action("panic", "Panics", any.clone(), any.clone()),
        action(
            "big_output",
            "Returns a huge JSON string",
            object(json!({ "bytes": count() })),
            any.clone(),
        ),
        action(
            "bad_json",
            "Returns text that is not JSON",
            any.clone(),
            any.clone(),
        ),
        action(
            "bad_utf8",
            "Returns or logs a string that is not UTF-8",
            object(json!({ "via": { "type": "string", "enum": ["output", "log"] } })),
            any.clone(),
        ),
        action(
            "bad_schema",
            "Returns output that violates its schema",
            any.clone(),
            json!({
                "type": "object",
                "required": ["id"],
                "properties": { "id": { "type": "integer" } },
            }),
        ),
        action(
            "log_flood",
            "Floods the log and stdout",
            object(json!({
                "count": count(),
                "message_bytes": count(),
                "stdout_lines": count(),
            })),
            any.clone(),
        ),
        action(
            "state_flood",
            "Sets state keys until refused",
            object(json!({ "count": count(), "value_bytes": count() })),
            any.clone(),
        ),
        action(
            "state_roundtrip",
            "Sets a state key and reads it back",
            object(json!({ "key": string(), "value": {} })),
            any.clone(),
        ),
        action(
            "state_then_alloc",
            "Is refused a state write, then allocates past the memory limit",
            object(json!({ "value_bytes": count(), "bytes": count() })),
            any.clone(),
        ),
        action(
            "state_get",
            "Reads a state key",
            object(json!({ "key": string() })),
            any.clone(),
        ),
        action("echo", "Returns its input", echo_schema(), echo_schema()),
        action(
            "step_key",
            "Returns the invocation's idempotency key (the `invocation` import)",
            any.clone(),
            any.clone(),
        ),
    ];
    json!({
        "name": "hostile",
        "version": "0.1.0",
        "description": "Attacks the host; for tests only",
        "auth": { "type": "api_key", "in": "header", "name": "Authorization", "prefix": "Bearer " },
        "hosts": ["api.example.test", "rebind.example.test", "localhost"],
        "actions": actions,
    })
    .to_string()
}

fn action(name: &str, description: &str, input_schema: Value, output_schema: Value) -> Value {
    json!({
        "name": name,
        "description": description,
        "input_schema": input_schema,
        "output_schema": output_schema,
    })
}

fn object(properties: Value) -> Value {
    json!({ "type": "object", "properties": properties })
}

fn count() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn request_schema() -> Value {
    json!({
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": string(),
            "method": string(),
            "headers": {
                "type": "array",
                "items": { "type": "array", "items": string(), "minItems": 2, "maxItems": 2 },
            },
            "body": string(),
        },
    })
}

fn echo_schema() -> Value {
    json!({
        "type": "object",
        "required": ["n"],
        "properties": { "n": { "type": "integer", "minimum": 0 } },
    })
}
