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

/// Hands the host bytes that are not UTF-8 where the contract promises a string: as the
/// output (`via` `"output"`, the default) or as a log message (`"log"`). The host must blame
/// the guest for it, never itself.
pub(crate) fn bad_utf8(input: &Input) -> Outcome {
    let via = input.str("via", "output")?;
    let bytes = vec![b'"', 0xff, 0xfe, b'"'];
    // SAFETY (deliberately broken): `from_utf8_unchecked` requires valid UTF-8 and these bytes
    // are not. The string is never inspected by this guest; it only travels through the
    // canonical ABI, which is exactly the promise this action exists to break. Safe Rust
    // cannot produce a `String` that is not UTF-8, so this needs `unsafe`.
    #[allow(
        unsafe_code,
        reason = "a string that is not UTF-8 is the attack itself"
    )]
    let text = unsafe { String::from_utf8_unchecked(bytes) };
    match via {
        "log" => {
            log(Level::Info, &text);
            Ok(json!({ "logged": true }).to_string())
        }
        _ => Ok(text),
    }
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
