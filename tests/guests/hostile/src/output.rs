//! Attacks through what the guest hands back: panics, oversized and malformed output, output
//! that misses its schema, and floods of log lines and stdout.

use std::io::Write;

use serde_json::json;

use crate::Outcome;
use crate::bindings::airlock::connector::log::{Level, write as log};
use crate::input::Input;

/// Returns the input text unchanged: the small benign action.
pub(crate) fn echo(input: String) -> Outcome {
    Ok(input)
}

pub(crate) fn panic() -> Outcome {
    panic!("boom")
}

/// A JSON string of `bytes` (default 2 MiB) letters `a`: the output is `bytes + 2` long.
pub(crate) fn big_output(input: &Input) -> Outcome {
    let bytes = input.usize("bytes", 2 * 1024 * 1024)?;
    let mut out = String::with_capacity(bytes.saturating_add(2));
    out.push('"');
    out.extend(std::iter::repeat_n('a', bytes));
    out.push('"');
    Ok(out)
}

pub(crate) fn bad_json() -> Outcome {
    Ok("this is not json".to_owned())
}

/// Valid JSON that violates the declared output schema (`id` must be an integer).
pub(crate) fn bad_schema() -> Outcome {
    Ok(json!({ "id": "not-a-number" }).to_string())
}

/// `count` (default 100,000) log lines of `message_bytes` (default 1024) bytes, then
/// `stdout_lines` (default: `count`) lines of the same size to stdout. Write errors on stdout
/// are ignored, as a hostile guest would, so a host that closes the stream does not stop it.
pub(crate) fn log_flood(input: &Input) -> Outcome {
    let count = input.u64("count", 100_000)?;
    let message_bytes = input.usize("message_bytes", 1024)?;
    let stdout_lines = input.u64("stdout_lines", count)?;
    let line = "L".repeat(message_bytes);
    for _ in 0..count {
        log(Level::Info, &line);
    }
    let mut stdout = std::io::stdout().lock();
    for _ in 0..stdout_lines {
        let _ = writeln!(stdout, "{line}");
    }
    let _ = stdout.flush();
    Ok(json!({ "ok": true }).to_string())
}
